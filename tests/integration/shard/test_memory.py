"""A real shard's memory figures against the kernel's own: `/info` and `/metrics`.

One shard process loads a fast-scan version with metadata from a moto S3 bucket. Its
`/info` memory must agree with `/proc/<pid>/smaps_rollup` (anonymous, and Rss less
anonymous) within 5 % (the acceptance figure), show its index files by kind, and, with
a one-second working-set window and searches running, come to a working set and a
needed-memory estimate. Every wait polls a condition with a deadline.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from simsearch.common.manifest import IndexParams, Manifest, ModelInfo
from simsearch.common.metadata import FieldType
from simsearch.common.wire import encode_array
from simsearch.indexer.writer import write_index
from tests.support.metaindex import add_metadata
from tests.support.motoindex import moto_layout, one_shard_env
from tests.support.procs import Service, start_service, wait_for

pytestmark = pytest.mark.integration

P, N, DIM = 4, 4000, 32
IDS = np.arange(N, dtype=np.int64) * 7919 + 11
PATHS = [f"photos/img{i}.jpg" for i in range(N)]
SCHEMA: dict[str, FieldType] = {"key": "string", "size": "int"}
PARAMS = IndexParams(
    factory=f"IVF32,PQ{DIM}x4", nlist=32, pq_m=DIM, nbits=4, nprobe=8, refine=10, train_size=N
)
KINDS = {"codes", "features", "metadata", "other"}


def unit(rows: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((rows, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def published(s3_endpoint: str) -> Iterator[tuple[str, Manifest]]:
    """One fast-scan version with metadata tables in a bucket of the moto server."""
    with moto_layout(s3_endpoint, "memory") as layout:
        model = ModelInfo(name="test", dim=DIM)
        base = write_index(
            layout, IDS, unit(N, 0), PATHS, model, partitions=P, params=PARAMS,
            probe_recall=False,
        )  # fmt: skip
        rows = {int(IDS[n]): {"key": PATHS[n], "size": 1000 + n} for n in range(N)}
        yield "s3://memory/idx", add_metadata(layout, base, rows, SCHEMA)


@pytest.fixture(scope="module")
def shard(
    published: tuple[str, Manifest], s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """One shard for the module: /info reads smaps afresh, windows of one second."""
    env = one_shard_env(
        published[0],
        s3_endpoint,
        tmp_path_factory.mktemp("memory") / "cache",
        SIMSEARCH_MEMORY_SAMPLE_S="0",  # every /info reads smaps afresh
        SIMSEARCH_WORKING_SET_WINDOW_S="1",
        SIMSEARCH_WORKING_SET_WINDOWS="3",
    )
    with start_service("shard", env) as service:
        yield service


def search(shard: Service, version: str, seed: int) -> None:
    queries = unit(8, seed)
    body = {
        "version": version, "partitions": list(range(P)), "k": 10, "dim": DIM, "nq": 8,
        "vectors_b64": encode_array(queries, "<f4"),
    }  # fmt: skip
    response = httpx.post(f"{shard.url}/search", json=body, timeout=30)
    assert response.status_code == 200, response.text


def memory(shard: Service) -> dict[str, Any]:
    body = httpx.get(f"{shard.url}/info", timeout=10).json()
    assert body["memory"] is not None, shard.log()[-3000:]
    found: dict[str, Any] = body["memory"]
    return found


def rollup(pid: int) -> dict[str, int]:
    """`/proc/<pid>/smaps_rollup` in bytes, by field."""
    lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]
    return {line.split(":")[0]: int(line.split()[1]) * 1024 for line in lines}


def test_info_memory_matches_smaps_rollup_and_splits_the_index_files(
    shard: Service, published: tuple[str, Manifest]
) -> None:
    version = published[1].version
    for seed in range(3):
        search(shard, version, seed)
    kernel_before = rollup(shard.process.pid)
    figures = memory(shard)
    kernel_after = rollup(shard.process.pid)
    for kernel in (kernel_before, kernel_after):  # the process may move a little between
        anonymous, file = kernel["Anonymous"], kernel["Rss"] - kernel["Anonymous"]
        assert figures["anonymous_bytes"] == pytest.approx(anonymous, rel=0.05)
        assert figures["file_bytes"] == pytest.approx(file, rel=0.05)
    files = figures["files"]
    assert set(files) == KINDS
    for kind in ("codes", "features", "metadata"):
        assert files[kind]["mapped_bytes"] > 0, (kind, files)
    for kind in ("codes", "features"):  # the searches read the lists and re-ranked
        assert files[kind]["resident_bytes"] > 0, (kind, files)
    assert figures["mapped_bytes"] == sum(f["mapped_bytes"] for f in files.values())
    # the fast-scan stack of the four partitions: ≥ 16 B of codes and 8 B of id a vector
    assert figures["stacks_bytes"] >= N * (DIM // 2 + 8)
    assert figures["paths_bytes"] >= sum(len(p) for p in PATHS)
    assert figures["anonymous_bytes"] > figures["stacks_bytes"] + figures["paths_bytes"]


def test_the_working_set_is_measured_and_metrics_have_every_figure(
    shard: Service, published: tuple[str, Manifest]
) -> None:
    version = published[1].version
    seeds = iter(range(10, 10_000))

    def measured() -> bool:
        search(shard, version, next(seeds))
        figures = memory(shard)
        return (
            bool(figures["working_set_bytes"])
            and figures["files"]["codes"]["working_set_bytes"] > 0
        )

    wait_for(measured, 30, "a working set measured while searching")
    figures = memory(shard)
    assert figures["needed_bytes"] >= figures["anonymous_bytes"] + figures["working_set_bytes"]
    assert figures["working_set_window_s"] >= 1
    text = httpx.get(f"{shard.url}/metrics", timeout=10).text
    samples = {
        (s.name, s.labels.get("kind", "")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("simsearch_shard_memory_")
    }
    for name in ("file_bytes", "mapped_bytes", "working_set_bytes"):
        assert {kind for n, kind in samples if n == f"simsearch_shard_memory_{name}"} == KINDS
    for name in ("anonymous_bytes", "needed_bytes", "stacks_bytes", "paths_bytes"):
        assert (f"simsearch_shard_memory_{name}", "") in samples, name
    assert samples[("simsearch_shard_memory_stacks_bytes", "")] > 0
    assert samples[("simsearch_shard_memory_mapped_bytes", "codes")] > 0
