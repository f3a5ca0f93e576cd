"""What each listed shard last said it can serve, kept fresh by polling.

`ShardRegistry` reads every listed shard's `GET /info` (the URLs come from a
`ShardSource`, see `router/source.py`) every `poll_s`, all at once with a bounded timeout,
and keeps per URL the last good `ShardInfo`, when it was seen and whether the shard is up.
A shard whose `/info` fails is down and left out of every assignment until it answers
again: recovery needs nobody. Fan-out also marks a shard down the moment it cannot be
reached, so queries stop waiting on a dead pod before the next poll.

`ShardRegistry.reload_all` (the router's `POST /admin/reload`) asks every known shard to
poll `CURRENT` now and then re-reads their `/info`, so a rollback or a publish reaches
routing without waiting for two poll periods (the shard's, then the router's).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
from pydantic import ValidationError

from simsearch.common.api import ShardReloadResult
from simsearch.common.errors import UpstreamFailure
from simsearch.common.wire import ShardInfo, ShardReload
from simsearch.router.routing import ShardView
from simsearch.router.source import ShardSource
from simsearch.router.transport import Upstream

__all__ = ["ShardRegistry", "ShardState", "views"]

log = logging.getLogger(__name__)

# A shard answers its reload within the timeout it is given (then 202); the transport gets
# this much longer, so a slow but healthy shard is not reported as "no answer".
_RELOAD_SLACK_S = 5.0


@dataclass
class ShardState:
    """What the router knows about one shard URL."""

    url: str
    up: bool = False
    info: ShardInfo | None = None  # the last good /info, kept while the shard is down
    seen_at: float | None = None  # monotonic time of that /info
    error: str | None = None  # why the shard is down
    failures: int = 0  # consecutive failed polls or queries
    latency_ms: float | None = None  # smoothed /search latency, to prefer fast shards
    recent_ms: deque[float] = field(default_factory=lambda: deque(maxlen=256))

    def view(self) -> ShardView | None:
        """What routing may use of this shard: nothing while it is down."""
        if not self.up or self.info is None:
            return None
        return ShardView.of(self.url, self.info.versions, self.info.collections)

    def observe_latency(self, ms: float) -> None:
        """Exponentially weighted: recent queries count most, one outlier does not."""
        self.latency_ms = ms if self.latency_ms is None else 0.8 * self.latency_ms + 0.2 * ms
        self.recent_ms.append(ms)

    def latency_percentile(self, percentile: float, min_samples: int = 20) -> float | None:
        """The `percentile` of the last 256 answer times (ms); None until there are enough."""
        if len(self.recent_ms) < min_samples:
            return None
        return float(np.percentile(np.fromiter(self.recent_ms, float), percentile))


def views(states: Iterable[ShardState]) -> list[ShardView]:
    """Routing's view of every shard that is up."""
    return [view for state in states if (view := state.view()) is not None]


class ShardRegistry:
    """The polled state of every shard, and the background task that keeps it fresh."""

    def __init__(
        self,
        source: ShardSource,
        upstream: Upstream,
        poll_s: float,
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
        on_poll: Callable[[], None] | None = None,
    ) -> None:
        self.source = source
        self.upstream = upstream
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self.clock = clock
        self.on_poll = on_poll  # e.g. refresh the shards-up gauges
        self.states: dict[str, ShardState] = {}
        self.polls = 0  # completed polls; 0 = we know nothing yet
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def views(self) -> list[ShardView]:
        """Every shard that is up, as routing sees it."""
        return views(self.states.values())

    async def poll_once(self) -> None:
        """List the shards, then read all their /info concurrently (bounded by the timeout)."""
        urls = await self.source.urls()
        for gone in set(self.states) - set(urls):
            log.info("shard %s left the shard list", gone)
            del self.states[gone]
        for url in urls:
            self.states.setdefault(url, ShardState(url))
        await asyncio.gather(*(self._probe(self.states[url]) for url in urls))
        self.polls += 1
        if self.on_poll is not None:
            self.on_poll()

    async def _probe(self, state: ShardState) -> None:
        try:
            reply = await self.upstream.get(f"{state.url}/info", self.timeout_s)
            if not reply.ok:
                raise ValueError(f"/info answered {reply.status}: {reply.detail()}")
            info = ShardInfo.model_validate_json(reply.body)
        except (UpstreamFailure, ValueError, ValidationError) as exc:
            self.mark_down(state.url, str(exc))
            return
        if not state.up:
            log.info("shard %s is up (ordinal %d)", state.url, info.ordinal)
        state.up, state.info, state.seen_at = True, info, self.clock()
        state.error, state.failures = None, 0

    def mark_down(self, url: str, reason: str) -> None:
        """Leave `url` out of assignments until its /info answers again."""
        state = self.states.get(url)
        if state is None:
            return
        if state.up or state.failures == 0:
            log.warning("shard %s is down: %s", url, reason)
        state.up, state.error = False, reason
        state.failures += 1

    async def reload_all(
        self, timeout_s: float, admin_key: str | None = None
    ) -> dict[str, ShardReloadResult]:
        """Ask every known shard to poll now (concurrently), then poll their /info.

        Each shard waits up to `timeout_s` for its poll. `admin_key` (the admin key the
        router's own `/admin/reload` was called with) is sent on as `X-API-Key`: shards read
        the same keys and refuse their `/admin/reload` without one when keys are on.
        Never raises for a shard's sake: a shard that is down, slow or answers an error
        is reported in its own entry, so one bad pod cannot hide what the others did. Down
        shards are asked too — a shard marked down may be back, and the refresh that
        follows notices either way.
        """
        urls = sorted(self.states)
        headers = {"x-api-key": admin_key} if admin_key else None
        results = await asyncio.gather(*(self._reload(u, timeout_s, headers) for u in urls))
        try:
            await self.poll_once()
        except Exception:  # as in `_run`: a bug in one poll must not fail the request
            log.exception("shard poll after a reload failed")
        return dict(zip(urls, results, strict=True))

    async def _reload(
        self, url: str, timeout_s: float, headers: dict[str, str] | None
    ) -> ShardReloadResult:
        """One shard's `POST /admin/reload`, with every failure turned into a result."""
        target = f"{url}/admin/reload?timeout_s={timeout_s:g}"
        try:
            reply = await self.upstream.post_json(target, b"", timeout_s + _RELOAD_SLACK_S, headers)
        except UpstreamFailure as exc:
            return ShardReloadResult(error=exc.reason)
        if reply.status not in (200, 202):
            return ShardReloadResult(status=reply.status, error=reply.detail())
        try:
            body = ShardReload.model_validate_json(reply.body)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            reason = f"not a reload answer: {'.'.join(map(str, first['loc']))}: {first['msg']}"
            return ShardReloadResult(status=reply.status, error=reason)
        return ShardReloadResult(status=reply.status, **body.model_dump())

    def refresh_soon(self) -> None:
        """Poll now instead of at the next tick (a shard answered that it changed)."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
            self._wake.clear()
            try:
                await self.poll_once()
            except Exception:  # a bug in one poll must not stop discovery for good
                log.exception("shard poll failed")

    async def start(self) -> None:
        """Poll once (so the first query finds its shards), then keep polling in the background."""
        await self.poll_once()
        self._task = asyncio.create_task(self._run(), name="shard-discovery")

    async def stop(self) -> None:
        """Cancel the background poll and close the source."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await asyncio.to_thread(self.source.close)
