"""Shards as real processes over real HTTP, on a directory store and on an S3 server (moto).

Covered: two shards split the partitions disjointly and completely and their merged answer
is brute force; bad requests are refused with reasons; the same over S3; a corrupt
partition file is reported and retried while the rest is served, and served once repaired;
a version published while a shard runs replaces the old one; a scale through the topology
file drains the partitions that moved; bad settings exit 2 naming the variable. Every
wait is on a condition with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import boto3
import httpx
import numpy as np
import pytest

from simsearch.common.layout import IndexLayout
from simsearch.common.manifest import Manifest, ModelInfo
from simsearch.common.placement import partitions_for
from simsearch.common.storage import FileStore, S3Options, S3Store
from simsearch.common.topk import Candidates, merge
from simsearch.common.wire import decode_array, encode_array
from simsearch.indexer.writer import write_index
from tests.support.procs import Service, start_service

pytestmark = pytest.mark.integration

P = 8
N = 2000
DIM = 32
K = 10
IDS = np.arange(N, dtype=np.int64) * 7919 + 11
PATHS = [f"img/{i}.jpg" for i in range(N)]


def unit(rows: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((rows, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def publish(layout: IndexLayout, seed: int = 0) -> Manifest:
    model = ModelInfo(name="test", dim=DIM)
    return write_index(layout, IDS, unit(N, seed), PATHS, model, partitions=P)


def env(
    store: str, cache: Path, ordinal: int = 0, replicas: int = 1, **extra: str
) -> dict[str, str]:
    return {
        "SIMSEARCH_STORE": store,
        "SIMSEARCH_SHARD_ORDINAL": str(ordinal),
        "SIMSEARCH_REPLICAS": str(replicas),
        "SIMSEARCH_CACHE_DIR": str(cache / f"shard{ordinal}"),
        "SIMSEARCH_POLL_S": "0.3",
        "SIMSEARCH_DRAIN_S": "0.3",
        "SIMSEARCH_LOG_FORMAT": "text",
        **extra,
    }


def wait_until(
    check: Callable[[], bool], what: str, service: Service, timeout_s: float = 20
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert service.process.poll() is None, f"shard died:\n{service.log()}"
        if check():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} not reached in {timeout_s}s:\n{service.log()[-3000:]}")


def info(service: Service) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{service.url}/info", timeout=10).json()
    return body


def search(
    service: Service, version: str, partitions: list[int], queries: np.ndarray, **extra: Any
) -> httpx.Response:
    body = {
        "version": version,
        "partitions": partitions,
        "k": K,
        "dim": queries.shape[1],
        "nq": len(queries),
        "vectors_b64": encode_array(queries, "<f4"),
        **extra,
    }
    return httpx.post(f"{service.url}/search", json=body, timeout=30)


def candidates(body: dict[str, Any]) -> Candidates:
    shape = (body["nq"], body["width"])
    return Candidates(
        decode_array(body["ids_b64"], "<i8", shape),
        decode_array(body["approx_b64"], "<f4", shape),
        decode_array(body["exact_b64"], "<f4", shape),
    )


def brute_force(queries: np.ndarray, seed: int = 0) -> np.ndarray:
    return IDS[np.argsort(-(queries @ unit(N, seed).T), axis=1)[:, :K]]


def metric(service: Service, series: str) -> float:
    """One series' value from /metrics (0 when it has not been created yet)."""
    text = httpx.get(f"{service.url}/metrics", timeout=10).text
    found = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


@pytest.fixture
def file_index(tmp_path: Path) -> tuple[IndexLayout, Manifest]:
    layout = IndexLayout(FileStore(tmp_path / "store"))
    return layout, publish(layout)


@pytest.fixture(scope="module")
def split_index(tmp_path_factory: pytest.TempPathFactory) -> tuple[IndexLayout, Manifest]:
    """An index only read from, shared by the tests of the two-shard cluster."""
    layout = IndexLayout(FileStore(tmp_path_factory.mktemp("split") / "store"))
    return layout, publish(layout)


@pytest.fixture(scope="module")
def two_shards(
    split_index: tuple[IndexLayout, Manifest], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Service]]:
    uri, cache = split_index[0].store.uri, tmp_path_factory.mktemp("caches")
    with ExitStack() as stack:
        yield [stack.enter_context(start_service("shard", env(uri, cache, o, 2))) for o in (0, 1)]


def test_two_shards_hold_disjoint_partitions_and_answer_exactly(
    two_shards: list[Service], split_index: tuple[IndexLayout, Manifest]
) -> None:
    version = split_index[1].version
    infos = [info(s) for s in two_shards]
    held = [i["versions"][0]["ready"] for i in infos]
    assert [(i["ordinal"], i["replicas"], i["ready"]) for i in infos] == [
        (0, 2, True),
        (1, 2, True),
    ]
    assert not set(held[0]) & set(held[1]) and sorted(held[0] + held[1]) == list(range(P))
    assert all(i["versions"][0]["failed"] == {} for i in infos)
    queries = unit(16, 1)
    answers = [search(s, version, h, queries) for s, h in zip(two_shards, held, strict=True)]
    assert [a.status_code for a in answers] == [200, 200]
    for answer, mine in zip(answers, held, strict=True):
        ids = candidates(answer.json()).ids
        assert set((ids[ids >= 0] % P).tolist()) <= set(mine)
    ids, _ = merge([candidates(a.json()) for a in answers], K, K)
    assert np.array_equal(ids, brute_force(queries))
    path_of = dict(zip(IDS.tolist(), PATHS, strict=True))
    for answer in answers:  # every candidate carries its stored path
        body = answer.json()
        assert body["paths"] == [[path_of[i] for i in row] for row in candidates(body).ids.tolist()]
    owner = two_shards[0] if ids[0, 0] % P in held[0] else two_shards[1]
    item = httpx.get(f"{owner.url}/items/{ids[0, 0]}", params={"version": version}).json()
    assert item["path"] == path_of[int(ids[0, 0])]
    assert metric(owner, 'simsearch_shard_searches_total{outcome="ok"}') == 1


def test_bad_requests_are_refused_with_reasons(
    two_shards: list[Service], split_index: tuple[IndexLayout, Manifest]
) -> None:
    shard = two_shards[0]
    version = split_index[1].version
    mine = info(shard)["versions"][0]["ready"]
    foreign = sorted(set(range(P)) - set(mine))
    q = unit(2, 2)
    nan = np.full((2, DIM), np.nan, dtype=np.float32)
    cases: list[tuple[httpx.Response, int, str]] = [
        (search(shard, version, foreign, q), 409, "partitions_not_ready"),
        (search(shard, "v20200101T000000Z-abcdef", mine, q), 409, "version_not_loaded"),
        (search(shard, version, mine, unit(2, 2)[:, :16]), 400, "invalid_vector"),
        (search(shard, version, mine, nan), 400, "invalid_vector"),
        (search(shard, version, mine, q, k=0), 422, "validation_error"),
        (search(shard, version, mine, q, k=1001), 422, "validation_error"),
        (search(shard, version, mine, q, vectors_b64="AAAA"), 400, "invalid_vector"),
        (httpx.get(f"{shard.url}/items/{mine[0] + P * 10**12}"), 404, "not_found"),
        (httpx.get(f"{shard.url}/items/{foreign[0]}"), 409, "partitions_not_ready"),
    ]
    for response, status, code in cases:
        body = response.json()
        assert (response.status_code, body["error"]) == (status, code), body
        assert body["detail"]
    assert str(foreign[0]) in cases[0][0].json()["detail"]
    assert "NaN" in cases[3][0].json()["detail"]
    assert httpx.get(f"{shard.url}/health/live").status_code == 200


def test_shard_over_s3(s3_endpoint: str, s3_env: None, tmp_path: Path) -> None:
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(
        Bucket="shard-index"
    )
    store = S3Store("shard-index", "idx", S3Options(endpoint_url=s3_endpoint))
    manifest = publish(IndexLayout(store))
    settings = env("s3://shard-index/idx", tmp_path, SIMSEARCH_S3_ENDPOINT_URL=s3_endpoint)
    with start_service("shard", settings) as shard:
        assert info(shard)["versions"][0]["ready"] == list(range(P))
        queries = unit(8, 5)
        answer = search(shard, manifest.version, list(range(P)), queries)
        assert answer.status_code == 200
        ids, _ = merge([candidates(answer.json())], K, K)
        assert np.array_equal(ids, brute_force(queries))
        assert metric(shard, "simsearch_shard_downloaded_bytes_total") == sum(
            ref.size for ref in manifest.files()
        )


def test_a_corrupt_partition_is_reported_retried_and_recovered(
    file_index: tuple[IndexLayout, Manifest], tmp_path: Path
) -> None:
    layout, manifest = file_index
    bad = 3
    path = tmp_path / "store" / layout.resolve(manifest.partition_files[bad].index)
    original = path.read_bytes()
    path.write_bytes(original[:-32] + b"\xff" * 32)  # same size, different bytes
    with start_service("shard", env(layout.store.uri, tmp_path)) as shard:
        version = info(shard)["versions"][0]
        assert version["ready"] == [p for p in range(P) if p != bad]
        assert "sha256" in version["failed"][str(bad)]
        others = [p for p in range(P) if p != bad]
        assert search(shard, manifest.version, others, unit(2, 6)).status_code == 200
        refused = search(shard, manifest.version, [bad], unit(2, 6))
        assert refused.status_code == 409 and "failed" in refused.json()["detail"]
        wait_until(
            lambda: metric(shard, "simsearch_shard_load_failures_total") >= 2,
            "a retry of the corrupt partition",
            shard,
        )
        path.write_bytes(original)  # repaired in the store: the next poll downloads it again
        wait_until(
            lambda: info(shard)["versions"][0]["ready"] == list(range(P)),
            "the repaired partition served",
            shard,
        )
        assert info(shard)["versions"][0]["failed"] == {}


def test_a_new_version_is_loaded_then_the_old_one_dropped(
    file_index: tuple[IndexLayout, Manifest], tmp_path: Path
) -> None:
    layout, old = file_index
    with start_service("shard", env(layout.store.uri, tmp_path)) as shard:
        assert [v["version"] for v in info(shard)["versions"]] == [old.version]
        new = publish(layout, seed=7)

        def switched() -> bool:
            versions = info(shard)["versions"]
            return [(v["version"], v["ready"]) for v in versions] == [(new.version, list(range(P)))]

        wait_until(switched, "the new version alone", shard)
        queries = unit(4, 8)
        answer = search(shard, new.version, list(range(P)), queries)
        ids, _ = merge([candidates(answer.json())], K, K)
        assert np.array_equal(ids, brute_force(queries, seed=7))
        assert search(shard, old.version, [0], queries).status_code == 409


def test_scaling_through_the_topology_file_drains_moved_partitions(
    file_index: tuple[IndexLayout, Manifest], tmp_path: Path
) -> None:
    layout, manifest = file_index
    topology = tmp_path / "topology.json"
    topology.write_text(json.dumps({"replicas": 1}))
    settings = env(
        layout.store.uri,
        tmp_path,
        SIMSEARCH_TOPOLOGY="file",
        SIMSEARCH_TOPOLOGY_FILE=str(topology),
    )
    with start_service("shard", settings) as shard:
        assert info(shard)["versions"][0]["ready"] == list(range(P))
        topology.write_text(json.dumps({"replicas": 3}))  # what `simsearch scale 3` does
        kept = partitions_for(0, P, 3)
        wait_until(
            lambda: info(shard)["versions"][0]["ready"] == kept and info(shard)["replicas"] == 3,
            "the moved partitions drained",
            shard,
        )
        assert search(shard, manifest.version, kept, unit(2, 9)).status_code == 200


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"SIMSEARCH_SHARD_ORDINAL": "0"}, "SIMSEARCH_STORE"),
        ({"SIMSEARCH_STORE": "ftp://x/y", "SIMSEARCH_SHARD_ORDINAL": "0"}, "ftp://x/y"),
        ({"SIMSEARCH_STORE": "/data", "HOSTNAME": "laptop"}, "SIMSEARCH_SHARD_ORDINAL"),
        (
            {"SIMSEARCH_STORE": "/data", "SIMSEARCH_SHARD_ORDINAL": "0", "SIMSEARCH_INDEX": "A!"},
            "SIMSEARCH_INDEX",
        ),
        (
            {
                "SIMSEARCH_STORE": "/data",
                "SIMSEARCH_SHARD_ORDINAL": "0",
                "SIMSEARCH_TOPOLOGY": "file",
                "SIMSEARCH_TOPOLOGY_FILE": "/nonexistent/topology.json",
            },
            "SIMSEARCH_TOPOLOGY_FILE",
        ),
    ],
)
def test_bad_settings_exit_2_naming_the_variable(settings: dict[str, str], named: str) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SIMSEARCH_")}
    clean.pop("HOSTNAME", None)
    done = subprocess.run(
        [sys.executable, "-m", "simsearch.cli", "serve", "shard"],
        env={**clean, **settings},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert named in done.stderr and "Traceback" not in done.stderr
