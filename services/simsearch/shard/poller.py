"""The shard's background poll of the store: the topology, each collection's `CURRENT`, loading.

A thread (`Poller._run`) polls every `poll_s`. A tick reads the topology once, refreshes
the set of collections (`Collections.refresh`: those the store lists, or the configured
ones), then reconciles every collection in turn: it reads that collection's `CURRENT`
and hands the manifest and the shard count to its `Holdings.reconcile`, which downloads,
verifies and loads in that same thread — loading is I/O and hashing, and a thread keeps
it off the event loop without making search wait. A failure is kept where it happened:
the topology's or the listing's in `last_error`, a collection's (a corrupt manifest, the
store unreachable) in that collection's `last_error`, so one broken collection never
stops the others from loading. `error()` joins them for `/info` and readiness; the
poller simply tries again next tick.

`poll_now` is what `POST /admin/reload` waits on: it wakes the thread for a poll *now* —
after `simsearch index rollback` or a publish, an operator need not wait `poll_s` — and
waits for a poll that started after the call, so its answer reflects the new `CURRENT`
of every collection. The poller stays the only thread that reads the store and loads: a
reload never loads in the request, so two loads can never race.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from simsearch.common.errors import SimsearchError
from simsearch.shard.collections import Collection, Collections
from simsearch.shard.metrics import ShardMetrics
from simsearch.shard.readiness import readiness
from simsearch.shard.topology import Topology

log = logging.getLogger(__name__)

_RELOAD_TICK_S = 0.05  # how often a waiting reload looks at the poll counter


class Poller:
    """The one thread that reads the store and loads, and what its last poll found.

    `replicas_seen`, `last_error` and `was_ready` are written by the poll thread only and
    read by requests (`/info`, readiness): single attribute reads, so no lock is needed.
    """

    def __init__(
        self,
        collections: Collections,
        topology: Topology,
        metrics: ShardMetrics,
        poll_s: float,
    ) -> None:
        self.collections = collections
        self.topology = topology
        self.metrics = metrics
        self.poll_s = poll_s
        self.replicas_seen = 0  # until the first poll reads the topology
        self.last_error: str | None = None  # the topology's or the listing's, not a collection's
        self.was_ready = False  # readiness held at the end of some tick
        self._gauged: set[str] = set()  # collections with gauge series
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by stop() and poll_now(): end the wait now
        self._count_lock = threading.Lock()
        self._polls_started = 0
        self._polls_done = 0
        self._thread: threading.Thread | None = None

    # ---- lifecycle

    def start(self) -> None:
        """Start polling (and so loading) in the background; returns at once."""
        self._thread = threading.Thread(target=self._run, name="shard-poller", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float) -> None:
        """Stop polling; a load in progress stops between partitions."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            # a wake that arrived during the poll ends this wait at once: one more poll,
            # which is what a reload sent mid-poll needs (it must see CURRENT afresh)
            self._wake.wait(self.poll_s)
            self._wake.clear()

    # ---- one poll

    def poll_once(self) -> None:
        """One tick: read topology and CURRENT, reconcile; failures are kept, not raised.

        Polls are counted (started, finished) so that `poll_now` can wait for one that
        started after its call, whichever thread runs it.
        """
        with self._count_lock:
            self._polls_started += 1
        try:
            self._poll()
        finally:
            with self._count_lock:
                self._polls_done += 1

    def _poll(self) -> None:
        """The tick's work: topology and collections once, then each collection in turn."""
        try:
            self.replicas_seen = self.topology.replicas()
            self._note_error(self._refresh())
        except SimsearchError as err:
            self._note_error(err.reason)
        except Exception as err:  # a bug, but the shard keeps serving what it has
            log.exception("poll failed")
            self._note_error(f"{type(err).__name__}: {err}")
        else:
            for collection in self.collections.all():
                if self._stop.is_set():
                    break
                self._poll_collection(collection)
        self.was_ready = self.was_ready or readiness(self.collections.all(), self.error())[0]
        self._update_gauges()

    def _refresh(self) -> str | None:
        """Refresh the set of collections; why a listing failed, if it did. The known set
        is polled anyway: a store that forbids listing still serves what it was told."""
        try:
            self.collections.refresh(late=self.was_ready)
        except SimsearchError as err:
            return f"listing the collections in {self.collections.store.uri}: {err.reason}"
        return None

    def _poll_collection(self, collection: Collection) -> None:
        """Read one collection's CURRENT and reconcile; its failures are kept on it."""
        try:
            manifest = collection.live_manifest()
            collection.unpublished = manifest is None
            if manifest is None:
                self.collections.release(collection)
                reason = (
                    f"index {collection.name!r} has no published version in "
                    f"{collection.layout.store.uri} yet"
                )
                _note(collection, reason)
                return
            collection.holdings.reconcile(manifest, self.replicas_seen, self._stop.is_set)
            collection.last_error = collection.holdings.store_error  # None unless it waits on S3
        except SimsearchError as err:
            _note(collection, err.reason)
        except Exception as err:  # a bug, but the shard keeps serving what it has
            log.exception("poll of collection %s failed", collection.name)
            _note(collection, f"{type(err).__name__}: {err}")
        finally:
            collection.polled = True

    def _note_error(self, reason: str | None) -> None:
        """Keep the reason (None: all is well); log it once per distinct problem."""
        if reason and reason != self.last_error:
            log.warning("poll: %s", reason)
        self.last_error = reason

    def error(self) -> str | None:
        """Why the last poll did not finish, for `/info` and readiness: the topology's or
        the listing's, then each collection's (named when more than one is polled).

        A collection without `CURRENT` is only worth saying while nothing is published at
        all: beside live collections, an empty default collection is no problem.
        """
        collections = self.collections.all()
        named = len(collections) > 1
        any_live = any(c.holdings.live is not None for c in collections)
        parts = [self.last_error] if self.last_error else []
        for c in collections:
            if c.last_error and not (c.unpublished and any_live):
                parts.append(f"{c.name}: {c.last_error}" if named else c.last_error)
        return "; ".join(parts) or None

    def _update_gauges(self) -> None:
        """Partitions by state and versions held per collection, and replicas, as of this
        poll; the series of a dropped collection go with it."""
        names = set()
        for c in self.collections.all():
            names.add(c.name)
            for state, count in c.holdings.counts().items():
                self.metrics.partitions.labels(c.name, state).set(count)
            self.metrics.versions.labels(c.name).set(len(c.holdings.views()))
        for gone in self._gauged - names:
            for state in ("ready", "loading", "failed"):
                self.metrics.partitions.remove(gone, state)
            self.metrics.versions.remove(gone)
        self._gauged = names
        self.metrics.replicas.set(self.replicas_seen)

    # ---- reload

    async def poll_now(self, timeout_s: float) -> bool:
        """Wake the thread for a poll now; wait up to `timeout_s` for that poll to finish.

        Returns whether it finished in time (False: still loading — the poll goes on in
        the background). The poll awaited is one that *starts* after this call, never one
        already running, which may have read the old `CURRENT`. Waiting is a poll of a
        counter with `asyncio.sleep`, so a long load ties up neither the event loop nor a
        thread per waiting request.
        """
        with self._count_lock:
            target = self._polls_started + 1
        self._wake.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._polls_done < target:
            left = deadline - loop.time()
            if left <= 0 or self._stop.is_set():
                return False
            await asyncio.sleep(min(_RELOAD_TICK_S, left))
        return True


def _note(collection: Collection, reason: str) -> None:
    """Keep a collection's reason; log it once per distinct problem, not every tick."""
    if reason != collection.last_error:
        log.warning("poll of collection %s: %s", collection.name, reason)
    collection.last_error = reason
