"""Schemathesis against the router, a shard and the embedder, every check, bounded.

A real cluster (two shards over a small index, the embedder with random weights, the
router, images in a moto S3 server; `tests/support/cluster.py`) is fuzzed service by
service from each one's own `/openapi.json`. Every check must pass: no 5xx, every answer
documented (status code, content type, headers, body schema), schema-invalid requests
refused, schema-valid ones accepted (with the data-dependent exceptions listed in
`tests/fuzz/schemathesis.toml`).

Bounded by `SIMSEARCH_FUZZ_EXAMPLES` examples per operation (default 100: the whole test,
cluster start included, takes about 50 s on two cores, ~2,250 requests); `scripts/fuzz.sh`
runs a longer pass of the same with a fresh seed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fuzz.runner import FuzzResult, run_schemathesis
from tests.support.cluster import SmallCluster, small_cluster

pytestmark = pytest.mark.integration

MAX_EXAMPLES = int(os.environ.get("SIMSEARCH_FUZZ_EXAMPLES", "100"))
_SEED = os.environ.get("SIMSEARCH_FUZZ_SEED", "1")  # fixed in `make test` (reproducible)
SEED = None if _SEED == "random" else int(_SEED)
TIMEOUT_S = float(os.environ.get("SIMSEARCH_FUZZ_TIMEOUT_S", "150"))


@pytest.fixture(scope="module")
def cluster(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmallCluster]:
    with small_cluster(s3_endpoint, tmp_path_factory.mktemp("fuzz-cluster")) as running:
        yield running


def _url(cluster: SmallCluster, service: str) -> str:
    return {
        "router": cluster.router.url,
        "shard": cluster.shards[0].url,
        "embedder": cluster.embedder.url,
    }[service]


@pytest.mark.parametrize("service", ["shard", "embedder", "router"])
def test_every_schemathesis_check_passes(
    cluster: SmallCluster, service: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_schemathesis(
        service, _url(cluster, service), tmp_path, MAX_EXAMPLES, SEED, TIMEOUT_S
    )
    with capsys.disabled():
        print(f"\nfuzz {result.summary()} (max {MAX_EXAMPLES} examples/operation)")
    assert_clean(result)
    assert all(s.process.poll() is None for s in (cluster.router, cluster.embedder))


def assert_clean(result: FuzzResult) -> None:
    """0 failures of any check (server errors and schema violations included), 0 errors."""
    assert result.generated > 0 and result.requests > 0, result.output
    assert not result.failures, result.output
    assert not result.errors, result.output
    assert result.returncode == 0, result.output
