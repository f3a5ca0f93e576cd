"""The collections this shard polls: per name its layout, cache, holdings and manifests.

A collection is a named index (`index/<name>/` in the store) with its own versions and
`CURRENT`. Every shard holds the partitions of every collection under the same placement
(ordinal, replicas, replication; each collection with its own P), so one `Collections`
registry keeps, per name, what `Holdings` keeps for one index today:

- its `IndexLayout`, and its `PartitionCache` at `<cache_dir>/<name>/` (manifest keys are
  relative to the index root, so two collections' files would collide in one folder);
- its `Holdings` (the versions held, make-before-break) and the manifests read so far;
- what its last poll found: an error, or that it has no `CURRENT`.

Which collections: those the store lists (`discover_collections`, re-read at every poll,
so one published later is picked up) or, when `SIMSEARCH_COLLECTIONS` names some, exactly
those. The shard's own `SIMSEARCH_INDEX` collection is always polled, so a shard over a
store with nothing published reports what it always did ("index 'default' has no
published version"). A discovered collection whose `CURRENT` disappears is dropped: its
holdings are released and its cache folder emptied.

The poller thread is the only writer. Readers (search, items, info) look a collection up
in a dict that is replaced, never mutated, so a lookup needs no lock.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable

from simsearch.common.errors import CollectionNotFound
from simsearch.common.layout import IndexLayout, discover_collections
from simsearch.common.manifest import Manifest, is_index_name
from simsearch.common.storage import ObjectStore
from simsearch.shard.loader import STAMPS_DIR, PartitionCache
from simsearch.shard.metrics import ShardMetrics
from simsearch.shard.settings import ShardSettings
from simsearch.shard.versions import Holdings

__all__ = ["Collection", "Collections"]

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class Collection:
    """One polled collection. `holdings` is replaced (never emptied in place) on release,
    so a reader holding the old object keeps a consistent snapshot."""

    def __init__(self, layout: IndexLayout, cache: PartitionCache, holdings: Holdings) -> None:
        self.layout = layout
        self.cache = cache
        self.holdings = holdings
        self.manifests: dict[str, Manifest] = {}  # read once per version, then remembered
        self.last_error: str | None = None  # why its last poll did not finish
        self.unpublished = False  # its last poll found no CURRENT
        self.polled = False  # it has been through a poll (whatever that found)
        # first polled after the shard was ready: it loads in the background and does not
        # take readiness away from a shard serving the others (see `readiness.readiness`)
        self.late = False

    @property
    def name(self) -> str:
        return self.layout.name

    def live_manifest(self) -> Manifest | None:
        """The manifest `CURRENT` points at, None without one; only held versions' stay."""
        version = self.layout.current()
        if version is None:
            return None
        manifest = self.manifests.get(version)
        if manifest is None:
            manifest = self.layout.load_manifest(version)
            held = {view.version for view in self.holdings.views()}
            self.manifests = {v: m for v, m in self.manifests.items() if v in held}
            self.manifests[version] = manifest
        return manifest


class Collections:
    """The registry of polled collections (see the module docstring)."""

    def __init__(
        self,
        store: ObjectStore,
        settings: ShardSettings,
        metrics: ShardMetrics,
        clock: Clock = time.monotonic,
    ) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.default_name = settings.index
        # polled whatever the store lists: the shard's own index, and any named ones
        self._fixed = tuple(dict.fromkeys((settings.index, *settings.collection_names)))
        self._by_name: dict[str, Collection] = {n: self._new(n) for n in self._fixed}
        self._strays_swept = False

    # ---- readers (any thread)

    def names(self) -> list[str]:
        """The names polled, sorted."""
        return sorted(self._by_name)

    def all(self) -> list[Collection]:
        """Every polled collection, by name."""
        by_name = self._by_name
        return [by_name[name] for name in sorted(by_name)]

    def get(self, name: str) -> Collection:
        """The collection `name`; `CollectionNotFound` (404) when this shard does not poll it."""
        found = self._by_name.get(name)
        if found is None:
            polled = ", ".join(sorted(self._by_name))
            raise CollectionNotFound(
                f"collection {name!r} is not polled by shard {self.settings.ordinal} "
                f"(polled: {polled})"
            )
        return found

    def default(self) -> Collection:
        """The shard's `SIMSEARCH_INDEX` collection (always polled)."""
        return self._by_name[self.default_name]

    # ---- the poller's side

    def refresh(self, late: bool) -> None:
        """Bring the set in line with the store: add collections that appeared (`late`
        when the shard is already serving), drop those whose `CURRENT` went away.

        With `SIMSEARCH_COLLECTIONS` set the set is fixed and nothing is listed. A listing
        that fails raises (a `StorageError`) and leaves the set as it was.
        """
        if self.settings.collection_names:
            wanted = set(self._fixed)
        else:
            wanted = set(discover_collections(self.store)) | set(self._fixed)
        current = self._by_name
        if wanted == current.keys():
            self._sweep_strays()
            return
        added = {}
        for name in sorted(wanted - current.keys()):
            added[name] = self._new(name)
            added[name].late = late
            log.info("collection %s found: polling it", name)
        self._by_name = {n: c for n, c in current.items() if n in wanted} | added
        for name in sorted(current.keys() - wanted):
            self._discard(current[name])
            log.info("collection %s has no CURRENT any more: dropped", name)
        self._sweep_strays()

    def release(self, collection: Collection) -> None:
        """Let go of everything `collection` holds (its `CURRENT` is gone), keeping it
        polled: fresh holdings, no remembered manifests, an empty cache folder."""
        if collection.holdings.live is None and not collection.holdings.views():
            return
        log.info("collection %s has no CURRENT any more: releasing what it held", collection.name)
        collection.holdings = self._holdings(collection.cache)
        collection.manifests = {}
        self._discard(collection)

    def _new(self, name: str) -> Collection:
        """A collection with nothing loaded yet (`InvalidParameter` for a bad name)."""
        layout = IndexLayout(self.store, name)
        cache = PartitionCache(layout, self.settings.cache_path, self.metrics)
        return Collection(layout, cache, self._holdings(cache))

    def _holdings(self, cache: PartitionCache) -> Holdings:
        settings = self.settings
        return Holdings(cache, settings.ordinal, settings.replication, settings.drain_s, self.clock)

    @staticmethod
    def _discard(collection: Collection) -> None:
        """Delete the collection's cached files and stamps (mapped files stay readable
        until their last search ends: unlinking is safe on POSIX)."""
        deleted = collection.cache.sweep(set())
        if deleted:
            log.info("collection %s: removed %d cached files", collection.name, deleted)

    def _sweep_strays(self) -> None:
        """Once, after the first good refresh: delete the cache folders of collections an
        earlier run of this shard held and that are not polled now."""
        if self._strays_swept:
            return
        self._strays_swept = True
        root = self.settings.cache_path
        for base in (root, root / STAMPS_DIR):
            if not base.is_dir():
                continue
            for folder in base.iterdir():
                if (
                    folder.is_dir()
                    and is_index_name(folder.name)
                    and (folder.name not in self._by_name)
                ):
                    shutil.rmtree(folder, ignore_errors=True)
                    log.info("removed the cache of collection %s (not polled)", folder.name)
