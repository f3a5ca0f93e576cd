"""The collections a shard polls: discovered or configured, the default always, dropped
when their `CURRENT` goes, each cached in its own folder.

Real tiny indexes (write_index on a FileStore) and real cache folders; nothing is mocked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from simsearch.common.errors import CollectionNotFound, ConfigError
from simsearch.common.layout import IndexLayout
from simsearch.common.manifest import Manifest, ModelInfo
from simsearch.common.settings import load_settings
from simsearch.common.storage import FileStore
from simsearch.indexer.writer import write_index
from simsearch.shard.collections import Collections
from simsearch.shard.loader import STAMPS_DIR
from simsearch.shard.metrics import ShardMetrics
from simsearch.shard.settings import ShardSettings

DIM = 16


def publish(store: FileStore, name: str, n: int = 120, partitions: int = 2) -> Manifest:
    """A real published version of collection `name` (ids differ per collection)."""
    rng = np.random.default_rng(len(name))
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    ids = np.arange(n, dtype=np.int64) * 31 + len(name)
    paths = [f"{name}/{i}.jpg" for i in range(n)]
    layout = IndexLayout(store, name)
    return write_index(layout, ids, vectors, paths, ModelInfo(name="t", dim=DIM), partitions)


def registry(tmp_path: Path, **settings: object) -> Collections:
    shard = ShardSettings(
        store=str(tmp_path / "store"),
        shard_ordinal=0,
        cache_dir=tmp_path / "cache",
        **settings,  # type: ignore[arg-type]
    )
    return Collections(FileStore(tmp_path / "store"), shard, ShardMetrics(CollectorRegistry()))


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "store")


def test_the_default_collection_is_polled_before_anything_is_published(tmp_path: Path) -> None:
    collections = registry(tmp_path)
    assert collections.names() == ["default"]
    collections.refresh(late=False)
    assert collections.names() == ["default"]
    assert collections.default().name == "default"


def test_collections_are_discovered_and_each_is_cached_in_its_own_folder(
    tmp_path: Path, store: FileStore
) -> None:
    publish(store, "default")
    photos = publish(store, "photos")
    collections = registry(tmp_path)
    collections.refresh(late=False)
    assert collections.names() == ["default", "photos"]
    found = collections.get("photos")
    assert found.cache.root == tmp_path / "cache" / "photos"
    assert collections.default().cache.root == tmp_path / "cache" / "default"
    assert found.live_manifest() == photos  # read once, then remembered
    assert found.manifests == {photos.version: photos}
    assert not found.late  # found by a shard that is not serving yet


def test_an_unknown_collection_is_a_404_naming_what_is_polled(
    tmp_path: Path, store: FileStore
) -> None:
    publish(store, "photos")
    collections = registry(tmp_path)
    collections.refresh(late=False)
    with pytest.raises(CollectionNotFound, match=r"'nope' is not polled .*default, photos"):
        collections.get("nope")
    assert CollectionNotFound.code == "collection_not_found"


def test_a_collection_found_while_serving_is_late(tmp_path: Path, store: FileStore) -> None:
    publish(store, "default")
    collections = registry(tmp_path)
    collections.refresh(late=True)
    publish(store, "photos")
    collections.refresh(late=True)
    assert collections.get("photos").late and not collections.default().late


def test_a_collection_whose_current_goes_is_dropped_and_its_cache_emptied(
    tmp_path: Path, store: FileStore
) -> None:
    publish(store, "default")
    manifest = publish(store, "photos")
    collections = registry(tmp_path)
    collections.refresh(late=False)
    photos = collections.get("photos")
    photos.holdings.reconcile(manifest, replicas=1)
    assert any(photos.cache.root.rglob("*.faiss"))
    (tmp_path / "store" / "index" / "photos" / "CURRENT").unlink()
    collections.refresh(late=True)
    assert collections.names() == ["default"]
    assert not any(photos.cache.root.rglob("*")) and not any(photos.cache.stamps.rglob("*"))
    with pytest.raises(CollectionNotFound):
        collections.get("photos")


def test_release_keeps_the_collection_polled_with_nothing_held(
    tmp_path: Path, store: FileStore
) -> None:
    manifest = publish(store, "default")
    collections = registry(tmp_path)
    default = collections.default()
    default.holdings.reconcile(manifest, replicas=1)
    old = default.holdings
    collections.release(default)
    assert default.holdings is not old and default.holdings.live is None
    assert old.views()  # a reader's snapshot of the old holdings stays whole
    assert default.manifests == {} and not any(default.cache.root.rglob("*.faiss"))
    assert collections.names() == ["default"]


def test_configured_collections_are_polled_without_listing_the_store(
    tmp_path: Path, store: FileStore
) -> None:
    publish(store, "photos")
    publish(store, "other")
    collections = registry(tmp_path, index="main", collections="photos, docs,photos")
    collections.refresh(late=False)
    assert collections.names() == ["docs", "main", "photos"]  # not "other": not named
    assert collections.default().name == "main"


def test_the_first_refresh_removes_caches_of_collections_not_polled(
    tmp_path: Path, store: FileStore
) -> None:
    publish(store, "default")
    for stale in (tmp_path / "cache" / "gone", tmp_path / "cache" / STAMPS_DIR / "gone"):
        stale.mkdir(parents=True)
        (stale / "trained.faiss").write_bytes(b"x")
    keep = tmp_path / "cache" / "default"
    keep.mkdir(parents=True)
    collections = registry(tmp_path)
    collections.refresh(late=False)
    assert not (tmp_path / "cache" / "gone").exists()
    assert not (tmp_path / "cache" / STAMPS_DIR / "gone").exists()
    assert keep.is_dir() and (tmp_path / "cache" / STAMPS_DIR).is_dir()


def test_collection_names_are_checked_as_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMSEARCH_STORE", "file:///data")
    monkeypatch.setenv("SIMSEARCH_SHARD_ORDINAL", "0")
    monkeypatch.setenv("SIMSEARCH_COLLECTIONS", "photos,Bad Name")
    with pytest.raises(ConfigError, match=r"SIMSEARCH_COLLECTIONS: .*'Bad Name' is not an index"):
        load_settings(ShardSettings)
    monkeypatch.setenv("SIMSEARCH_COLLECTIONS", " photos , ,docs ")
    assert load_settings(ShardSettings).collection_names == ("photos", "docs")
    monkeypatch.setenv("SIMSEARCH_COLLECTIONS", "")
    assert load_settings(ShardSettings).collection_names == ()
