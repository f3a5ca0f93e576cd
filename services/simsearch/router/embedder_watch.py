"""Whether the embedder answers: polled like the shards, shown in `/health` and metrics.

Before this, `/health` said `embedder: true` whenever an embedder URL was configured, so
a dead embedder was invisible until a user's `/search/image` failed. The watch reads the
embedder's `/health/ready` every poll and on every image search outcome, so `/health`,
`simsearch status` and the `simsearch_router_embedder_up` gauge say what is true now.

It only *reports*. `/search/image` always tries the embedder (a restarted embedder is
used by the very next query, not after the next poll), and the router's readiness does
not depend on it: vector search and `/search/similar` work without an embedder.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from prometheus_client import Gauge

from simsearch.common.errors import UpstreamFailure
from simsearch.router.transport import Upstream

__all__ = ["EmbedderState", "EmbedderWatch"]

log = logging.getLogger(__name__)


@dataclass
class EmbedderState:
    """What the router last learned about the embedder."""

    configured: bool
    up: bool = False
    error: str | None = "not polled yet"
    checked_at: float | None = None  # time.monotonic() of the last poll or search outcome


class EmbedderWatch:
    """Polls `{url}/health/ready` every `poll_s`; `observe` records search outcomes too."""

    def __init__(
        self, url: str | None, upstream: Upstream, poll_s: float, timeout_s: float, gauge: Gauge
    ) -> None:
        self.url = url
        self.upstream = upstream
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self.gauge = gauge
        self.state = EmbedderState(configured=url is not None)
        if url is None:
            self.state.error = "no SIMSEARCH_EMBEDDER_URL: image search is off"
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.url is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def observe(self, up: bool, error: str | None = None) -> None:
        """Record what a poll or an image search just found."""
        if up != self.state.up:
            log.log(
                logging.INFO if up else logging.WARNING,
                "embedder %s: %s",
                "up" if up else "down",
                error or "ready",
                extra={"embedder": self.url},
            )
        self.state.up = up
        self.state.error = None if up else error
        self.state.checked_at = time.monotonic()
        self.gauge.set(1 if up else 0)

    async def poll(self) -> None:
        """One readiness read of the embedder."""
        assert self.url is not None
        try:
            reply = await self.upstream.get(f"{self.url}/health/ready", self.timeout_s)
        except UpstreamFailure as exc:
            self.observe(False, exc.reason)
            return
        if reply.ok:
            self.observe(True)
        else:
            self.observe(False, f"not ready (HTTP {reply.status}: {reply.detail()})")

    async def _loop(self) -> None:
        while True:
            await self.poll()
            await asyncio.sleep(self.poll_s)
