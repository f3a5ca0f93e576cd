"""The shard's background poll of the store: `CURRENT`, the topology, and loading.

A thread (`Poller._run`) polls every `poll_s`: it reads `CURRENT` and the topology and
hands them to `Holdings.reconcile`, which downloads, verifies and loads in that same
thread — loading is I/O and hashing, and a thread keeps it off the event loop without
making search wait. Any failure of a poll (store unreachable, corrupt manifest) is kept in
`last_error`, reported by `/health/ready`, and the poller simply tries again next tick.

`poll_now` is what `POST /admin/reload` waits on: it wakes the thread for a poll *now* —
after `simsearch index rollback` or a publish, an operator need not wait `poll_s` — and
waits for a poll that started after the call, so its answer reflects the new `CURRENT`.
The poller stays the only thread that reads the store and loads: a reload never loads in
the request, so two loads can never race.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from simsearch.common.errors import SimsearchError
from simsearch.common.layout import IndexLayout
from simsearch.common.manifest import Manifest
from simsearch.shard.metrics import ShardMetrics
from simsearch.shard.topology import Topology
from simsearch.shard.versions import Holdings

log = logging.getLogger(__name__)

_RELOAD_TICK_S = 0.05  # how often a waiting reload looks at the poll counter


class Poller:
    """The one thread that reads the store and loads, and what its last poll found.

    `replicas_seen` and `last_error` are written by the poll thread only and read by
    requests (`/info`, readiness): single attribute reads, so no lock is needed.
    """

    def __init__(
        self,
        layout: IndexLayout,
        topology: Topology,
        holdings: Holdings,
        metrics: ShardMetrics,
        poll_s: float,
    ) -> None:
        self.layout = layout
        self.topology = topology
        self.holdings = holdings
        self.metrics = metrics
        self.poll_s = poll_s
        self.replicas_seen = 0  # until the first poll reads the topology
        self.last_error: str | None = None
        self._manifests: dict[str, Manifest] = {}
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
        """The tick's work."""
        try:
            self.replicas_seen = self.topology.replicas()
            manifest = self._live_manifest()
            if manifest is None:
                self._note_error(
                    f"index {self.layout.name!r} has no published version in "
                    f"{self.layout.store.uri} yet"
                )
                return
            self.holdings.reconcile(manifest, self.replicas_seen, self._stop.is_set)
            self.last_error = self.holdings.store_error  # None unless a load waits on S3
        except SimsearchError as err:
            self._note_error(err.reason)
        except Exception as err:  # a bug, but the shard keeps serving what it has
            log.exception("poll failed")
            self._note_error(f"{type(err).__name__}: {err}")
        finally:
            self._update_gauges()

    def _note_error(self, reason: str) -> None:
        """Keep the reason; log it once per distinct problem, not every tick."""
        if reason != self.last_error:
            log.warning("poll: %s", reason)
        self.last_error = reason

    def _live_manifest(self) -> Manifest | None:
        """The manifest CURRENT points at (read once per version, then remembered)."""
        version = self.layout.current()
        if version is None:
            return None
        manifest = self._manifests.get(version)
        if manifest is None:
            manifest = self.layout.load_manifest(version)
            held = {view.version for view in self.holdings.views()}
            self._manifests = {v: m for v, m in self._manifests.items() if v in held}
            self._manifests[version] = manifest
        return manifest

    def _update_gauges(self) -> None:
        """Partitions by state, versions held and replicas, as of this poll."""
        for state, count in self.holdings.counts().items():
            self.metrics.partitions.labels(state).set(count)
        self.metrics.versions.set(len(self.holdings.views()))
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
