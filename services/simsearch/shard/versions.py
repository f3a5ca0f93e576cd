"""What this shard holds of each index version, and the make-before-break policy.

`Holdings.reconcile(manifest, replicas)` is called by the poller on every tick with the
live version and the current shard count. It

1. loads the partitions this ordinal owns (`placement.partitions_for`) that are not ready
   yet, one by one, serving each as soon as it is open (and retrying failed ones). A
   partition that cannot be fetched because the *store* is unreachable stays `loading`
   (the outage is waited out, `store_error` says why), and the rest of that pass is
   skipped: the next tick tries again. `failed` is kept for what an operator must look
   at: a corrupt or missing file, a full or read-only local disk;
2. only after that pass, schedules what it no longer owns to be dropped `drain_s` later
   (cancelled if the partition comes back), so the new holder has time to load it and
   the cluster never loses coverage while it rebalances;
3. keeps older versions served until the live one is *complete* here (every owned
   partition ready, none failed), then drops them `drain_s` later. At most two versions
   stay in memory: the live one and the newest complete fallback; a version superseded
   before it completed is dropped at once.

Readers (search, items, info) never lock around FAISS: they take a `VersionView`
snapshot under a short lock. The `ready` dict of a version is replaced, never mutated, so a
snapshot stays consistent while the poller loads or drops partitions.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from simsearch.common.errors import LocalWriteError, ObjectNotFound, StorageError
from simsearch.common.manifest import Manifest
from simsearch.common.placement import partitions_for
from simsearch.shard.loader import PartitionCache, Served, partition_refs
from simsearch.shard.searcher import VersionIndex

__all__ = ["Holdings", "VersionView"]

log = logging.getLogger(__name__)

Clock = Callable[[], float]
MAX_VERSIONS = 2


@dataclass(frozen=True)
class VersionView:
    """An immutable snapshot of one version on this shard (what readers work with)."""

    manifest: Manifest
    index: VersionIndex | None  # template and stacks; None until trained.faiss is read
    ready: dict[int, Served]
    assigned: frozenset[int]
    loading: frozenset[int]
    failed: dict[int, str]
    settled: bool  # every owned partition was attempted at least once
    complete: bool  # every owned partition is ready, none failed

    @property
    def version(self) -> str:
        return self.manifest.version


@dataclass
class _Version:
    """Mutable state of one version, owned by the poller thread."""

    manifest: Manifest
    index: VersionIndex | None = None
    ready: dict[int, Served] = field(default_factory=dict)
    assigned: frozenset[int] = frozenset()
    loading: frozenset[int] = frozenset()
    failed: dict[int, str] = field(default_factory=dict)
    settled: bool = False
    complete_at: float | None = None
    drops: dict[int, float] = field(default_factory=dict)  # partition -> deadline

    def view(self) -> VersionView:
        return VersionView(
            self.manifest,
            self.index,
            self.ready,
            self.assigned,
            self.loading,
            dict(self.failed),
            self.settled,
            self.complete_at is not None,
        )


class Holdings:
    """The versions and partitions this shard serves; mutated only by `reconcile`."""

    def __init__(
        self,
        cache: PartitionCache,
        ordinal: int,
        replication: int,
        drain_s: float,
        clock: Clock = time.monotonic,
    ) -> None:
        self.cache = cache
        self.ordinal = ordinal
        self.replication = replication
        self.drain_s = drain_s
        self.clock = clock
        self._lock = threading.Lock()
        self._versions: dict[str, _Version] = {}
        self._retire_at: dict[str, float] = {}  # older version -> when it is dropped
        self._live: str | None = None
        self._live_since = 0.0  # when CURRENT last moved (a publish or a rollback)
        self._swept = False
        self.store_error: str | None = None  # why the last load pass waits on the store

    # ---- readers

    @property
    def live(self) -> str | None:
        """The version `CURRENT` named at the last reconcile (a publish or a rollback moves it)."""
        return self._live

    def views(self) -> list[VersionView]:
        """Snapshots of every held version, oldest first."""
        with self._lock:
            return [state.view() for state in sorted(self._versions.values(), key=_age)]

    def view(self, version: str) -> VersionView | None:
        """A snapshot of `version`, or None if this shard does not hold it."""
        with self._lock:
            state = self._versions.get(version)
            return state.view() if state is not None else None

    # ---- the poller's side

    def reconcile(
        self, manifest: Manifest, replicas: int, stop: Callable[[], bool] = lambda: False
    ) -> None:
        """Bring the holdings in line with the live `manifest` and `replicas` (see module)."""
        with self._lock:
            state = self._versions.get(manifest.version)
            if state is None:
                state = self._versions[manifest.version] = _Version(manifest)
                log.info("loading version %s", manifest.version)
            self._retire_at.pop(manifest.version, None)  # live again after a rollback
            if manifest.version != self._live:
                self._live, self._live_since = manifest.version, self.clock()
            owned = self._owned(manifest.partitions, replicas, frozenset(state.ready))
            state.assigned = owned
            state.loading = frozenset(owned - state.ready.keys())
            for p in owned & state.drops.keys():
                del state.drops[p]  # owned again before its drain ended: keep it
            self._retire_superseded(manifest.version)
        self._load_missing(state, stop)
        if stop():
            return
        now = self.clock()
        with self._lock:
            state.settled = True
            if state.complete_at is None and not state.failed and owned <= state.ready.keys():
                state.complete_at = now
                log.info("version %s complete: %d partitions", manifest.version, len(owned))
            self._drain_partitions(state, now)
            self._retire_older(state, now)
        self._sweep_once()

    def _owned(self, partitions: int, replicas: int, held: frozenset[int]) -> frozenset[int]:
        """Partitions this ordinal holds under `replicas` shards.

        A shard beyond the shard count is being scaled away: it keeps serving what it
        `held` until it is stopped (by the StatefulSet controller, or `simsearch scale`
        once the survivors cover everything), loading nothing new. Dropping at once would
        open a gap in coverage before the survivors have loaded its partitions.
        """
        if self.ordinal >= replicas:
            return held
        return frozenset(partitions_for(self.ordinal, partitions, replicas, self.replication))

    def _load_missing(self, state: _Version, stop: Callable[[], bool]) -> None:
        """Load each owned partition not ready yet; publish each as soon as it is open."""
        pending = sorted(state.loading)
        if pending and state.index is None:
            try:
                index = self.cache.load_template(state.manifest)
            except Exception as err:  # never crash the shard: report and retry next tick
                if self._waits_on_store(state, err):
                    return
                reason = f"trained.faiss: {_reason(err)}"
                log.warning("version %s: %s", state.manifest.version, reason)
                with self._lock:
                    state.failed = {**state.failed, **dict.fromkeys(pending, reason)}
                    state.loading = frozenset()
                self.cache.metrics.load_failures.inc(len(pending))
                return
            with self._lock:
                state.index = index
        for number in pending:
            if stop() or not self._load_one(state, number):
                return
        self.store_error = None  # a whole pass without waiting on the store

    def _waits_on_store(self, state: _Version, err: Exception) -> bool:
        """Whether `err` is a store outage (then noted, and the pass ends), not bad data.

        Why not `failed`: the data is fine and nothing needs fixing here; the router sees
        the partition `loading` as before, and the next tick retries without a report
        that pages somebody. A missing object or a local write failure is not an outage.
        """
        if not isinstance(err, StorageError) or isinstance(err, ObjectNotFound | LocalWriteError):
            return False
        reason = _reason(err)
        if reason != self.store_error:
            log.warning("version %s: waiting for the store: %s", state.manifest.version, reason)
        self.store_error = reason
        return True

    def _load_one(self, state: _Version, number: int) -> bool:
        """Load one partition; False when the store is down (the pass should stop)."""
        assert state.index is not None
        try:
            served = self.cache.load_partition(state.manifest, number, state.index)
        except Exception as err:  # a bad partition must not take the others down
            if self._waits_on_store(state, err):
                return False
            reason = _reason(err)
            log.warning(
                "version %s partition %d failed: %s", state.manifest.version, number, reason
            )
            self.cache.metrics.load_failures.inc()
            with self._lock:
                state.failed = {**state.failed, number: reason}
                state.loading = state.loading - {number}
            return True
        with self._lock:
            state.ready = {**state.ready, number: served}
            state.failed = {p: r for p, r in state.failed.items() if p != number}
            state.loading = state.loading - {number}
        return True

    def _drain_partitions(self, state: _Version, now: float) -> None:
        """Schedule, and when due perform, the drop of partitions no longer owned."""
        for p in state.ready.keys() - state.assigned:
            state.drops.setdefault(p, now + self.drain_s)
        due = {p for p, deadline in state.drops.items() if deadline <= now}
        state.failed = {p: r for p, r in state.failed.items() if p in state.assigned}
        if not due:
            return
        gone = [state.ready[p] for p in due if p in state.ready]
        state.ready = {p: s for p, s in state.ready.items() if p not in due}
        state.drops = {p: d for p, d in state.drops.items() if p not in due}
        if state.index is not None:
            state.index.forget_stacks()  # stacks over the dropped partitions would keep them
        log.info("version %s: dropped partitions %s", state.manifest.version, sorted(due))
        self.cache.discard((ref for s in gone for ref in s.refs()), self._kept_keys())

    def _retire_superseded(self, live: str) -> None:
        """Keep the live version and the newest complete other one; drop the rest now."""
        complete = [s for v, s in self._versions.items() if v != live and s.complete_at]
        fallback = max(complete, key=_age).manifest.version if complete else None
        for version in list(self._versions):
            if version not in (live, fallback):
                self._drop_version(version)

    def _retire_older(self, live: _Version, now: float) -> None:
        """Once the live version is complete, drop every other version after `drain_s`.

        The delay counts from when the live version was complete *and* live: after a
        rollback to a version that stayed loaded, the router still plans on the version
        rolled back from until its next poll, so that one must not vanish at once.
        """
        if live.complete_at is None:
            return
        start = max(live.complete_at, self._live_since)
        for version in list(self._versions):
            if version != live.manifest.version:
                deadline = self._retire_at.setdefault(version, start + self.drain_s)
                if deadline <= now:
                    self._drop_version(version)

    def _drop_version(self, version: str) -> None:
        """Forget a version (lock held) and delete its files that nothing else uses."""
        state = self._versions.pop(version)
        self._retire_at.pop(version, None)
        refs = [state.manifest.trained, *(r for s in state.ready.values() for r in s.refs())]
        self.cache.discard(refs, self._kept_keys())
        log.info("dropped version %s", version)

    def _kept_keys(self) -> set[str]:
        """Keys of every file a held version still serves or owns (lock held)."""
        keys: set[str] = set()
        for state in self._versions.values():
            keys.add(state.manifest.trained.key)
            files = state.manifest.partition_files
            for p in state.ready.keys() | state.assigned:
                keys.update(ref.key for ref in partition_refs(files[p]))
        return keys

    def _sweep_once(self) -> None:
        """After the first full load pass, delete cache files an earlier run left behind."""
        if self._swept:
            return
        with self._lock:
            keep = self._kept_keys()
        deleted = self.cache.sweep(keep)
        self._swept = True
        if deleted:
            log.info("removed %d stale files from the cache", deleted)

    def counts(self) -> dict[str, int]:
        """Partitions by state over all versions (for the gauges)."""
        with self._lock:
            states = list(self._versions.values())
        return {
            "ready": sum(len(s.ready) for s in states),
            "loading": sum(len(s.loading) for s in states),
            "failed": sum(len(s.failed) for s in states),
        }


def _age(state: _Version) -> tuple[datetime, str]:
    """Creation order: the manifest's time (ids only resolve to the second), then the id."""
    return state.manifest.created, state.manifest.version


def _reason(err: Exception) -> str:
    """A one-line reason for /info: the domain reason, or the exception type and message."""
    reason = getattr(err, "reason", None)
    return str(reason) if reason else f"{type(err).__name__}: {err}"
