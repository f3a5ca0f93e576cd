"""The poller over several collections: one tick reconciles each with its own P, one
broken collection does not stop the others, readiness names the one holding it back.

Real tiny indexes on a FileStore, real loading; ticks are run by hand (`poll_once`).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest

from simsearch.common.layout import IndexLayout
from simsearch.common.manifest import Manifest, ModelInfo
from simsearch.common.placement import partitions_for
from simsearch.common.storage import FileStore
from simsearch.indexer.writer import write_index
from simsearch.shard.collections import Collections
from simsearch.shard.metrics import ShardMetrics
from simsearch.shard.poller import Poller
from simsearch.shard.readiness import readiness, shard_info
from simsearch.shard.settings import ShardSettings
from simsearch.shard.topology import StaticTopology

DIM = 16
SIZES = {"default": 4, "photos": 3}  # P per collection


def publish(store: FileStore, name: str, seed: int = 0, n: int = 150) -> Manifest:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    ids = np.arange(n, dtype=np.int64) * 17 + len(name)
    paths = [f"{name}/{i}.jpg" for i in range(n)]
    model = ModelInfo(name="t", dim=DIM)
    return write_index(IndexLayout(store, name), ids, vectors, paths, model, SIZES[name])


class Shard:
    """A poller over a registry, as `build_service` wires them, without HTTP."""

    def __init__(self, root: Path, ordinal: int = 0, replicas: int = 1, **extra: object) -> None:
        self.settings = ShardSettings(
            store=str(root / "store"),
            shard_ordinal=ordinal,
            replicas=replicas,
            cache_dir=root / f"cache{ordinal}",
            drain_s=0,
            **extra,  # type: ignore[arg-type]
        )
        self.metrics = ShardMetrics(CollectorRegistry())
        store = FileStore(root / "store")
        self.collections = Collections(store, self.settings, self.metrics)
        topology = StaticTopology(replicas)
        self.poller = Poller(self.collections, topology, self.metrics, poll_s=3600)

    def ready(self) -> tuple[bool, str]:
        return readiness(self.collections.all(), self.poller.error())

    def held(self, name: str) -> dict[str, list[int]]:
        """Version -> ready partitions of collection `name`."""
        views = self.collections.get(name).holdings.views()
        return {v.version: sorted(v.ready) for v in views}


def test_one_tick_loads_every_collection_with_its_own_partition_count(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    manifests = {name: publish(store, name) for name in SIZES}
    shards = [Shard(tmp_path, ordinal, replicas=2) for ordinal in (0, 1)]
    for shard in shards:
        shard.poller.poll_once()
        assert shard.ready()[0], shard.ready()
        for name, manifest in manifests.items():
            owned = partitions_for(shard.settings.ordinal, SIZES[name], 2, 1)
            assert shard.held(name) == {manifest.version: sorted(owned)}
    info = shard_info(shards[0].poller, shards[0].settings)
    assert info.collections == ["default", "photos"] and info.index == "default"
    assert {(v.collection, v.version, v.partitions, v.live) for v in info.versions} == {
        (name, m.version, SIZES[name], True) for name, m in manifests.items()
    }
    assert info.error is None and info.ready
    assert (tmp_path / "cache0" / "photos" / "versions").is_dir()


def test_a_corrupt_manifest_in_one_collection_does_not_stop_the_others(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    publish(store, "default")
    photos = publish(store, "photos")
    manifest = tmp_path / "store" / "index" / "photos" / "versions" / photos.version
    (manifest / "manifest.json").write_text("{not json")
    shard = Shard(tmp_path)
    shard.poller.poll_once()
    assert shard.held("default") and not shard.held("photos")
    error = shard.poller.error()
    assert error is not None and error.startswith("photos: ")
    ready, reason = shard.ready()  # photos has no live version: it does not count
    assert ready and reason.startswith("default: serving"), reason
    assert shard.collections.get("photos").last_error is not None
    assert shard.collections.default().last_error is None


def test_not_ready_until_every_collection_was_polled_and_loaded(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    publish(store, "default")
    publish(store, "photos")
    shard = Shard(tmp_path)
    assert shard.ready() == (False, "waiting for the first poll of the index")
    shard.collections.refresh(late=False)
    default = shard.collections.default()
    shard.poller._poll_collection(default)  # halfway through a first tick
    assert shard.ready() == (False, "photos: waiting for its first poll")
    shard.poller._poll_collection(shard.collections.get("photos"))
    ready, reason = shard.ready()
    assert ready and "default: serving" in reason and "photos: serving" in reason


def test_a_collection_published_later_does_not_take_readiness_away(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    publish(store, "default")
    shard = Shard(tmp_path)
    shard.poller.poll_once()
    assert shard.ready()[0] and shard.poller.was_ready
    photos = publish(store, "photos")
    shard.collections.refresh(late=shard.poller.was_ready)
    assert shard.collections.get("photos").late
    assert shard.ready()[0]  # loading in the background, the default still served
    shard.poller.poll_once()
    assert shard.held("photos") == {photos.version: list(range(SIZES["photos"]))}


def test_a_rollback_moves_only_that_collections_live_version(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    default = publish(store, "default")
    first = publish(store, "photos", seed=1)
    second = publish(store, "photos", seed=2)
    shard = Shard(tmp_path)
    shard.poller.poll_once()
    assert IndexLayout(store, "photos").rollback(first.version) == first.version
    shard.poller.poll_once()
    live = {
        (v.collection, v.version)
        for v in shard_info(shard.poller, shard.settings).versions
        if v.live
    }
    assert live == {("default", default.version), ("photos", first.version)}
    assert second.version != first.version


def test_a_default_collection_without_current_is_released_not_dropped(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    publish(store, "default")
    publish(store, "photos")
    shard = Shard(tmp_path)
    shard.poller.poll_once()
    (tmp_path / "store" / "index" / "default" / "CURRENT").unlink()
    shard.poller.poll_once()
    assert shard.collections.names() == ["default", "photos"]
    assert shard.held("default") == {} and shard.held("photos")
    assert shard.poller.error() is None  # an empty default beside a live collection is fine
    assert shard.ready()[0]


def test_nothing_published_reports_what_a_single_index_shard_always_did(tmp_path: Path) -> None:
    shard = Shard(tmp_path)
    shard.poller.poll_once()
    ready, reason = shard.ready()
    assert not ready
    assert re.fullmatch(r"index 'default' has no published version in file://.* yet", reason)
    assert shard.poller.error() == reason


def test_gauges_are_labelled_by_collection_and_leave_with_it(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    publish(store, "default")
    publish(store, "photos")
    shard = Shard(tmp_path)
    shard.poller.poll_once()
    text = generate_latest(shard.metrics.registry).decode()
    assert 'simsearch_shard_partitions{collection="photos",state="ready"} 3.0' in text
    assert 'simsearch_shard_versions{collection="default"} 1.0' in text
    (tmp_path / "store" / "index" / "photos" / "CURRENT").unlink()
    shard.poller.poll_once()
    text = generate_latest(shard.metrics.registry).decode()
    assert 'collection="photos"' not in text and 'collection="default"' in text
    assert not any((tmp_path / "cache0" / "photos").rglob("*.faiss"))
