"""The drift signal: the time-bucketed window, what feeds it, `/info` and the gauges.

The window is driven by a fake clock (buckets expire, a reused slot starts over). Through
a shard over a fast-scan version whose manifest carries a `centroid_fit`: unfiltered
model-space searches feed the window with `Template.centroid_distance` of their
projected queries; index-space, filtered and exact requests do not; `/info` reports the
live mean, the baseline, the ratio and the count; the gauges carry the same figures and
lose a version's series when it is dropped.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from simsearch.common.ann import Template
from simsearch.common.layout import IndexLayout
from simsearch.common.manifest import CentroidFit, IndexParams, Manifest, ModelInfo, new_version_id
from simsearch.common.storage import FileStore
from simsearch.common.wire import ShardSearchRequest, encode_array
from simsearch.indexer.writer import write_index
from simsearch.shard.app import build_service
from simsearch.shard.drift import BUCKETS, FLUSH_BATCHES, FLUSH_QUERIES, Drift, DriftWindow
from simsearch.shard.execute import execute
from simsearch.shard.metrics import ShardMetrics
from simsearch.shard.query import prepare
from simsearch.shard.searcher import VersionIndex
from simsearch.shard.service import ShardService
from simsearch.shard.settings import ShardSettings
from tests.support.metaindex import add_metadata


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def given(distances: list[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A batch whose `measure` (below) is `distances`: they ride in coarse_d's column 0."""
    d = np.array(distances, np.float32)[:, None]
    return np.zeros((len(d), 4), np.float32), d, np.zeros((len(d), 1), np.int64)


def first_column(xq: np.ndarray, coarse_d: np.ndarray, coarse_i: np.ndarray) -> np.ndarray:
    assert len(xq) == len(coarse_d) == len(coarse_i)
    out: np.ndarray = coarse_d[:, 0]
    return out


def test_the_window_keeps_its_buckets_and_expires_them() -> None:
    clock = Clock()
    window = DriftWindow(300.0, first_column, clock)  # 10 buckets of 30 s
    assert window.read() == (None, 0)
    window.observe(*given([1.0, 3.0]))
    clock.now = 100.0
    window.observe(*given([5.0]))
    assert window.read() == (3.0, 3)
    clock.now = 299.0  # bucket 0 is still inside (tick 9)
    assert window.read() == (3.0, 3)
    clock.now = 305.0  # tick 10: bucket 0 is out, bucket 3 (t=100) still in
    assert window.read() == (5.0, 1)
    window.observe(*given([7.0]))  # slot 0 again: starts over
    assert window.read() == (6.0, 2)
    clock.now = 100.0 + 30 * BUCKETS  # tick 13: t=100's bucket is out
    assert window.read() == (7.0, 1)
    clock.now = 1e6
    assert window.read() == (None, 0)


def test_observations_are_measured_in_batches_and_stale_ones_dropped() -> None:
    clock = Clock()
    calls: list[int] = []

    def measure(xq: np.ndarray, coarse_d: np.ndarray, coarse_i: np.ndarray) -> np.ndarray:
        calls.append(len(xq))
        return first_column(xq, coarse_d, coarse_i)

    window = DriftWindow(300.0, measure, clock)
    for _ in range(FLUSH_BATCHES - 1):
        window.observe(*given([2.0]))
    assert calls == []  # queued: nothing measured on the search's path yet
    window.observe(*given([2.0]))
    assert calls == [FLUSH_BATCHES]  # one call for all of them
    window.observe(*given([1.0] * FLUSH_QUERIES))
    assert calls == [FLUSH_BATCHES, FLUSH_QUERIES]
    clock.now = 30.0 * BUCKETS  # tick 10 takes slot 0 ...
    window.observe(*given([9.0]))
    window.read()
    clock.now = 0.0  # ... so a batch still queued from tick 0 would be older than it
    window.observe(*given([4.0]))
    clock.now = 30.0 * BUCKETS
    assert window.read() == (9.0, 1)


def test_the_ratio_needs_both_figures() -> None:
    assert Drift(1.5, 1.0, 10).ratio == 1.5
    assert Drift(None, 1.0, 0).ratio is None
    assert Drift(1.0, None, 3).ratio is None
    assert Drift(1.0, 0.0, 3).ratio is None


def test_a_one_list_template_measures_nothing() -> None:
    """The exact plan ("IVF1,Flat"): one centroid says nothing about fit."""
    index: Any = faiss.IndexIVFFlat(faiss.IndexFlatIP(8), 8, 1, faiss.METRIC_INNER_PRODUCT)
    index.train(np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32))
    assert VersionIndex(Template.of(index)).drift_window(300) is None


P = 2
N = 2000
DIM = 32
IDS = np.arange(N, dtype=np.int64) * 13 + 5
PATHS = [f"img/{i}.jpg" for i in range(N)]
FIT = CentroidFit(trained=0.5, indexed=0.6, p90=0.8, sample=100)
PARAMS = IndexParams(
    factory="IVF16,PQ16x4", nlist=16, pq_m=16, nbits=4, nprobe=4, refine=2, train_size=N
)


def unit(rows: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((rows, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def republish(layout: IndexLayout, base: Manifest, fit: CentroidFit | None) -> Manifest:
    """A copy of `base` (same files) under a new version id, with `fit` as its baseline."""
    version = new_version_id()
    while version <= base.version:
        time.sleep(0.01)
        version = new_version_id()
    data = base.model_dump(mode="json")
    data.update(version=version, parent=base.version)
    data["centroid_fit"] = fit.model_dump(mode="json") if fit is not None else None
    manifest = Manifest.model_validate(data)
    layout.publish(manifest)
    return manifest


@pytest.fixture
def published(tmp_path: Path) -> tuple[IndexLayout, Manifest]:
    layout = IndexLayout(FileStore(tmp_path / "store"))
    model = ModelInfo(name="test", dim=DIM)
    base = write_index(
        layout, IDS, unit(N, 0), PATHS, model, partitions=P, params=PARAMS, probe_recall=False
    )
    rows = {int(i): {"key": PATHS[j]} for j, i in enumerate(IDS)}
    with_meta = add_metadata(layout, base, rows, {"key": "string"})
    return layout, republish(layout, with_meta, FIT)


@pytest.fixture
def shard(published: tuple[IndexLayout, Manifest], tmp_path: Path) -> Any:
    settings = ShardSettings(
        store=str(tmp_path / "store"),
        shard_ordinal=0,
        replicas=1,
        cache_dir=tmp_path / "cache",
        drain_s=0,
    )
    service = build_service(settings, ShardMetrics(CollectorRegistry()))
    service.poller.poll_once()
    yield service
    service.stop()


def search(service: ShardService, version: str, q: np.ndarray, **extra: Any) -> None:
    body = {
        "version": version,
        "partitions": list(range(P)),
        "k": 5,
        "dim": DIM,
        "nq": len(q),
        "vectors_b64": encode_array(q, "<f4"),
        **extra,
    }
    request = ShardSearchRequest.model_validate(body)
    execute(prepare(request, service.holdings, service.settings), service.metrics)


def test_searches_feed_the_window_info_and_gauges(
    shard: ShardService, published: tuple[IndexLayout, Manifest]
) -> None:
    _, manifest = published
    (view,) = shard.holdings.views()
    assert view.index is not None
    template = view.index.template
    q = unit(6, 1)
    search(shard, manifest.version, q[:4])
    search(shard, manifest.version, q[4:])
    # none of these count: a stored vector, a filtered search
    search(shard, manifest.version, q, space="index")
    search(shard, manifest.version, q, filter={"field": "key", "prefix": "img/"})
    xq = template.project(q)
    want = float(np.mean(template.centroid_distance(xq, *template.coarse(xq, PARAMS.nprobe))))
    (info,) = shard.info().versions
    assert info.drift_queries == 6
    assert info.centroid_distance_live == pytest.approx(want, rel=1e-5)
    assert info.centroid_distance_indexed == FIT.indexed
    assert info.drift_ratio == pytest.approx(want / FIT.indexed, rel=1e-5)
    registry = shard.metrics.registry
    labels = {"collection": "default", "version": manifest.version}
    ratio = registry.get_sample_value("simsearch_drift_ratio", labels)
    assert ratio == pytest.approx(want / FIT.indexed, rel=1e-5)
    live = registry.get_sample_value("simsearch_centroid_distance", {**labels, "source": "live"})
    assert live == pytest.approx(want, rel=1e-5)
    indexed = {**labels, "source": "indexed"}
    assert registry.get_sample_value("simsearch_centroid_distance", indexed) == FIT.indexed


def test_a_dropped_version_leaves_no_series(
    shard: ShardService, published: tuple[IndexLayout, Manifest]
) -> None:
    layout, manifest = published
    search(shard, manifest.version, unit(3, 2))
    registry = shard.metrics.registry
    old = {"collection": "default", "version": manifest.version}
    assert registry.get_sample_value("simsearch_drift_ratio", old) is not None
    newer = republish(layout, manifest, None)  # a version without the baseline
    shard.poller.poll_once()  # loads it; drain_s 0: the old one is dropped at once
    assert [v.version for v in shard.holdings.views()] == [newer.version]
    assert registry.get_sample_value("simsearch_drift_ratio", old) is None
    assert (
        registry.get_sample_value("simsearch_centroid_distance", {**old, "source": "live"}) is None
    )
    search(shard, newer.version, unit(3, 2))
    (info,) = shard.info().versions
    assert info.drift_queries == 3 and info.drift_ratio is None
    assert info.centroid_distance_indexed is None and info.centroid_distance_live is not None
    new = {"collection": "default", "version": newer.version, "source": "live"}
    assert registry.get_sample_value("simsearch_centroid_distance", new) is not None
