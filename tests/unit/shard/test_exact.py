"""The exact scan: numpy brute force, the tie order, filters, the pool's priority, metrics.

`exact_top_k` over real `features.h5` files (float32 and float16, several partitions,
blocks smaller than a partition) must give the ids and scores of `numpy` brute force,
with ties at the cut settled by id as `common.topk` merges; k over the rows pads with
-1. Through the service: an `exact` request over an IVF fast-scan version (with a PCA,
float16 features) answers the true top k with `exact_scan`, leaves the normal search's
metrics alone, honours a filter and the "index" space, and its mappings are gone after.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from simsearch.common.errors import PartitionsNotReady, VersionNotLoaded
from simsearch.common.features import open_features, write_features
from simsearch.common.layout import IndexLayout
from simsearch.common.manifest import IndexParams, Manifest, ModelInfo
from simsearch.common.metadata import FieldType
from simsearch.common.storage import FileStore
from simsearch.common.wire import ShardCandidates, ShardSearchRequest, decode_array, encode_array
from simsearch.indexer.writer import write_index
from simsearch.shard import exact
from simsearch.shard.app import build_service
from simsearch.shard.exact import SCAN_LOCK, Source, exact_top_k, lower_priority
from simsearch.shard.metrics import ShardMetrics
from simsearch.shard.service import ShardService
from simsearch.shard.settings import ShardSettings
from tests.support.metaindex import add_metadata

DIM = 16


def unit(rows: int, seed: int, dim: int = DIM) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute(q: np.ndarray, ids: np.ndarray, vectors: np.ndarray, k: int) -> tuple[Any, Any]:
    """Top k by (score desc, id asc) with the re-rank's per-row dot product."""
    x = np.asarray(vectors, dtype=np.float32)
    scores = np.einsum("qd,nd->qn", q, x)
    order = np.lexsort((np.broadcast_to(ids, scores.shape), -scores), axis=1)[:, :k]
    return ids[order], np.take_along_axis(scores, order, 1)


def sources(tmp_path: Path, parts: list[tuple[np.ndarray, np.ndarray]], dtype: str) -> list[Any]:
    out = []
    for number, (ids, vectors) in enumerate(parts):
        path = tmp_path / f"{number}.h5"
        write_features(path, ids, vectors, [f"p{i}" for i in ids], dtype=dtype)
        out.append(Source(number, open_features(path)))
    return out


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_exact_top_k_is_numpy_brute_force(tmp_path: Path, dtype: str) -> None:
    vectors = unit(1000, 0)
    ids = np.random.default_rng(1).permutation(10_000)[:1000].astype(np.int64)
    parts = [(ids[p::3], vectors[p::3]) for p in range(3)]
    q = unit(7, 2)
    best = exact_top_k(q, sources(tmp_path, parts, dtype), 25, block_rows=64)
    stored = np.concatenate([np.asarray(v, dtype=dtype) for _, v in parts])
    want_ids, want_scores = brute(q, np.concatenate([i for i, _ in parts]), stored, 25)
    assert np.array_equal(best.ids, want_ids)
    assert np.array_equal(best.scores, want_scores)  # bit for bit the re-rank's scores
    for q_row in range(len(q)):  # where each id lives: its partition and row
        for j in range(25):
            number, row = best.numbers[q_row, j], best.rows[q_row, j]
            assert parts[number][0][row] == best.ids[q_row, j]


def test_ties_are_ordered_by_id_across_blocks_and_partitions(tmp_path: Path) -> None:
    """Forty copies of one vector (ids scattered over two partitions and many blocks)
    score the same: the top 10 are the 10 smallest of their ids, by id."""
    base = unit(400, 3)
    q = unit(1, 4)
    twin = base[int(np.argmax(base @ q[0]))]
    ids = np.random.default_rng(5).permutation(5000)[:400].astype(np.int64)
    tied = np.random.default_rng(6).choice(400, 40, replace=False)
    base[tied] = twin
    parts = [(ids[p::2], base[p::2]) for p in range(2)]
    best = exact_top_k(q, sources(tmp_path, parts, "float32"), 10, block_rows=16)
    assert best.ids[0].tolist() == sorted(ids[tied].tolist())[:10]
    assert len(set(best.scores[0].tolist())) == 1


def test_k_over_the_rows_pads_and_rows_select(tmp_path: Path) -> None:
    vectors = unit(30, 7)
    ids = np.arange(30, dtype=np.int64) * 3
    part = sources(tmp_path, [(ids, vectors)], "float32")[0]
    q = unit(2, 8)
    best = exact_top_k(q, [part], 50, block_rows=8)
    assert (best.ids[:, :30] >= 0).all() and (best.ids[:, 30:] == -1).all()
    assert np.isneginf(best.scores[:, 30:]).all()
    assert np.array_equal(best.ids[:, :30], brute(q, ids, vectors, 30)[0])
    rows = np.array([1, 4, 9, 16, 25])  # a filter's selection: only those are scored
    picked = exact_top_k(q, [Source(0, part.features, rows)], 3, block_rows=2)
    assert np.array_equal(picked.ids, brute(q, ids[rows], vectors[rows], 3)[0])
    assert set(picked.rows.ravel().tolist()) <= set(rows.tolist())


def maps_of(path: Path) -> int:
    with open("/proc/self/maps", encoding="utf-8") as maps:
        return sum(str(path) in line for line in maps)


def test_the_scan_maps_its_own_and_drops_it(tmp_path: Path) -> None:
    vectors = unit(5000, 9)
    part = sources(tmp_path, [(np.arange(5000, dtype=np.int64), vectors)], "float32")[0]
    before = maps_of(part.features.path)
    seen: list[int] = []
    original = exact._scan_source

    def spy(*args: Any) -> None:
        seen.append(maps_of(part.features.path))
        original(*args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(exact, "_scan_source", spy)
        exact_top_k(unit(1, 1), [part], 5, block_rows=1024)
    assert before >= 1 and seen == [before + 1] and maps_of(part.features.path) == before


def test_a_dropped_file_is_a_409(tmp_path: Path) -> None:
    part = sources(tmp_path, [(np.arange(10, dtype=np.int64), unit(10, 1))], "float32")[0]
    part.features.path.unlink()
    with pytest.raises(PartitionsNotReady, match="dropped during the exact scan"):
        exact_top_k(unit(1, 1), [part], 5, block_rows=8)


# ----------------------------------------------------------------------- priority


def test_pool_threads_run_at_the_nice_value() -> None:
    if os.getpriority(os.PRIO_PROCESS, 0) >= 10:
        pytest.skip("this process already runs at nice >= 10")
    with ThreadPoolExecutor(1, initializer=lower_priority, initargs=(10,)) as pool:
        nice = pool.submit(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        assert nice.result() == 10
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) < 10  # only that thread


def test_a_refused_nice_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    def refuse(*_args: Any) -> None:
        raise PermissionError(1, "Operation not permitted")

    with pytest.MonkeyPatch.context() as patch, caplog.at_level(logging.WARNING):
        patch.setattr(os, "setpriority", refuse)
        patch.setattr(os, "getpriority", lambda *_args: 0)
        lower_priority(10)
    assert "keeps its CPU priority" in caplog.text


# ----------------------------------------------------------------------- the service

P = 4
N = 3000
WIDE = 32  # the model's dimension; the version's PCA space is DIM
IDS = np.arange(N, dtype=np.int64) * 7919 + 11
VECTORS = unit(N, 0, WIDE)
PATHS = [f"img/{i}.jpg" for i in range(N)]
SCHEMA: dict[str, FieldType] = {"key": "string", "size": "int"}
ROWS: dict[int, dict[str, Any]] = {int(IDS[i]): {"key": PATHS[i], "size": i} for i in range(N)}
FASTSCAN = IndexParams(
    factory=f"IVF32,PQ{DIM}x4",
    nlist=32,
    pq_m=DIM,
    nbits=4,
    nprobe=4,
    refine=2,
    train_size=N,
    pca_dim=DIM,
)
LOOP = asyncio.new_event_loop()
threading.Thread(target=LOOP.run_forever, daemon=True).start()


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    root = tmp_path_factory.mktemp("store")
    layout = IndexLayout(FileStore(root))
    model = ModelInfo(name="test", dim=WIDE)
    base = write_index(
        layout, IDS, VECTORS, PATHS, model, partitions=P, params=FASTSCAN, probe_recall=False
    )
    return root, add_metadata(layout, base, ROWS, SCHEMA)


@pytest.fixture(scope="module")
def shard(published: tuple[Path, Manifest], tmp_path_factory: pytest.TempPathFactory) -> Any:
    settings = ShardSettings(
        store=str(published[0]),
        shard_ordinal=0,
        replicas=1,
        cache_dir=tmp_path_factory.mktemp("cache"),
        exact_block_rows=256,
    )
    service = build_service(settings, ShardMetrics(CollectorRegistry()))
    service.poller.poll_once()
    yield service
    service.stop()


@pytest.fixture(scope="module")
def fastscan(published: tuple[Path, Manifest]) -> Manifest:
    """The version with a PCA (float16 features in a 16-d space) and metadata tables."""
    return published[1]


def exact_request(version: str, q: np.ndarray, **extra: Any) -> ShardSearchRequest:
    return ShardSearchRequest.model_validate(
        {
            "version": version,
            "partitions": list(range(P)),
            "k": 10,
            "dim": q.shape[1],
            "nq": len(q),
            "vectors_b64": encode_array(q, "<f4"),
            "exact": True,
            **extra,
        }
    )


def run(shard: ShardService, request: ShardSearchRequest) -> ShardCandidates:
    return asyncio.run_coroutine_threadsafe(shard.search(request), LOOP).result(timeout=60)


def held(shard: ShardService) -> tuple[np.ndarray, np.ndarray, Any]:
    """Every stored row of the held version (ids, scoring-space float16 vectors) and it."""
    (view,) = shard.holdings.views()
    parts = [view.ready[p].partition.features for p in sorted(view.ready)]
    return np.concatenate([f.ids for f in parts]), np.concatenate([f.vectors for f in parts]), view


def sample(shard: ShardService, name: str, labels: dict[str, str] | None = None) -> float:
    return shard.metrics.registry.get_sample_value(name, labels or {}) or 0.0


def test_an_exact_request_answers_the_true_top_k(shard: ShardService, fastscan: Manifest) -> None:
    """Model-space queries are projected as the normal path does (PCA), every row is
    scored, the answer is k wide with approx = exact and the paths, and only the exact
    metrics move."""
    ids, vectors, view = held(shard)
    assert view.index is not None and view.index.template.pretransform is not None
    assert vectors.dtype == np.float16
    q = unit(5, 11, WIDE)
    searches = sample(shard, "simsearch_shard_searches_total", {"outcome": "ok"})
    latency = sample(shard, "simsearch_shard_search_seconds_count")
    found = run(shard, exact_request(fastscan.version, q))
    assert found.exact_scan and found.width == 10
    got = decode_array(found.ids_b64, "<i8", (5, 10))
    scores = decode_array(found.exact_b64, "<f4", (5, 10))
    want_ids, want_scores = brute(view.index.template.project(q), ids, vectors, 10)
    assert np.array_equal(got, want_ids) and np.array_equal(scores, want_scores)
    assert found.approx_b64 == found.exact_b64
    assert found.paths == [[PATHS[int((i - 11) // 7919)] for i in row] for row in got]
    assert sample(shard, "simsearch_shard_exact_searches_total", {"outcome": "ok"}) >= 1
    assert sample(shard, "simsearch_shard_exact_seconds_count") >= 1
    assert sample(shard, "simsearch_shard_searches_total", {"outcome": "ok"}) == searches
    assert sample(shard, "simsearch_shard_search_seconds_count") == latency
    normal = run(shard, exact_request(fastscan.version, q, exact=False))
    assert not normal.exact_scan and normal.width == 10 * 2  # k·refine candidates


def test_an_exact_request_honours_the_filter_and_the_index_space(
    shard: ShardService, fastscan: Manifest
) -> None:
    ids, vectors, view = held(shard)
    assert view.index is not None
    q = view.index.template.project(unit(3, 12, WIDE))  # already in the scoring space
    node = {"field": "size", "range": {"lt": 700}}
    found = run(shard, exact_request(fastscan.version, q, space="index", filter=node))
    got = decode_array(found.ids_b64, "<i8", (3, 10))
    keep = np.array([ROWS[int(i)]["size"] < 700 for i in ids])
    assert np.array_equal(got, brute(q, ids[keep], vectors[keep], 10)[0])


def test_exact_refusals_are_counted_as_exact(shard: ShardService, fastscan: Manifest) -> None:
    before = sample(
        shard, "simsearch_shard_exact_searches_total", {"outcome": "version_not_loaded"}
    )
    with pytest.raises(VersionNotLoaded):
        run(shard, exact_request("20000101-000000", unit(1, 1, WIDE)))
    after = sample(shard, "simsearch_shard_exact_searches_total", {"outcome": "version_not_loaded"})
    assert after == before + 1
    # exact answers k per query whatever refine says: k·refine over the limit is fine
    found = run(shard, exact_request(fastscan.version, unit(1, 2, WIDE), k=1000, refine=100))
    assert found.width == 1000 and found.exact_scan


def test_the_scan_waits_for_the_scan_lock(shard: ShardService, fastscan: Manifest) -> None:
    """The memory sampler holds SCAN_LOCK while it reads smaps: no scan runs meanwhile."""
    request = exact_request(fastscan.version, unit(1, 3, WIDE))
    with SCAN_LOCK:
        pending = asyncio.run_coroutine_threadsafe(shard.search(request), LOOP)
        with pytest.raises(TimeoutError):
            pending.result(timeout=0.3)
    assert pending.result(timeout=30).exact_scan
