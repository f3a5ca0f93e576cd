"""Coalescing concurrent queries into one shard call per shard.

Each query through the router costs an HTTP request to every shard it fans out to, and
at 1M vectors the Python around that request (parse, validate, serialise, schedule)
costs more CPU than the FAISS scan. The shard API already takes a batch of queries, so
concurrent queries that ask the same thing of the same index version of the same
collection (same k, nprobe, refine, vector space and filter) are sent together: one
request per shard carries them all, FAISS scans them in one call, and the merged answer
is split back per query.

There is no timer. A query that finds nothing in flight for its key is sent at once, so
a lone query pays nothing; queries that arrive while a batch is in flight wait for it to
return and then go out together, so the batch size follows the load by itself (this is
the "opportunistic" batching of the embedder's micro-batcher, without its decode step).

Waiting is not free, so two things are settled when a batch is *sent*, not when its
first query arrived (the fault matrix, tests/integration/cluster/test_faults.py, found both
with a frozen shard: a batch in flight stalls for the first-try share of the deadline,
and everything queued behind it inherited its shards and a deadline from before the stall):

* the deadline: each caller's clock starts when it arrives, so the batch gets what is
  left of the earliest caller's deadline (`SIMSEARCH_TIMEOUT_MS` bounds the whole
  query, queueing included, not each batch it waits behind);
* the shards: with `refresh`, the batch's version is looked up again in the registry, so
  a shard marked down while the batch waited is no longer asked.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from simsearch.router.fanout import FanOut, FanoutResult, SearchParams
from simsearch.router.routing import VersionChoice

__all__ = ["Coalescer", "coalescing_key"]

log = logging.getLogger(__name__)

# (collection, version, params): a shard call carries one collection, one version and one
# filter (`SearchParams` compares filters by their JSON), so queries differing in any of
# these are never batched together
_Key = tuple[str, str, SearchParams]
_MIN_TIMEOUT_S = 0.001  # a caller out of time still gets its (failed) answer, never a hang
Refresh = Callable[[str, str], VersionChoice | None]


def coalescing_key(choice: VersionChoice, params: SearchParams) -> _Key:
    """What queries must share to go out in one shard call: collection, version, params."""
    return (choice.collection, choice.version, params)


@dataclass
class _Waiting:
    choice: VersionChoice
    queries: np.ndarray
    deadline: float  # loop time by which the caller wants its answer
    future: asyncio.Future[FanoutResult]


class Coalescer:
    """`search` with the signature of `FanOut.search`; batches concurrent calls by key."""

    def __init__(self, fanout: FanOut, max_queries: int, refresh: Refresh | None = None) -> None:
        """`refresh(collection, version)`: that version's current `VersionChoice` (None if
        gone)."""
        self.fanout = fanout
        self.max_queries = max(1, max_queries)
        self.refresh = refresh
        self._waiting: dict[_Key, list[_Waiting]] = {}
        self._draining: set[_Key] = set()

    async def search(
        self, choice: VersionChoice, queries: np.ndarray, params: SearchParams, timeout_s: float
    ) -> FanoutResult:
        """The merged top-k of `queries`, possibly computed together with other callers'."""
        if len(queries) >= self.max_queries:
            return await self.fanout.search(choice, queries, params, timeout_s)
        key = coalescing_key(choice, params)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[FanoutResult] = loop.create_future()
        waiting = _Waiting(choice, queries, loop.time() + timeout_s, future)
        self._waiting.setdefault(key, []).append(waiting)
        if key not in self._draining:
            self._draining.add(key)
            asyncio.get_running_loop().create_task(self._drain(key))
        return await future

    async def _drain(self, key: _Key) -> None:
        """Send what waits under `key`, batch after batch, until nothing is left."""
        try:
            while self._waiting.get(key):
                batch = self._take(key)
                await self._send(batch, key[2])
        finally:
            self._draining.discard(key)
            if not self._waiting.get(key):
                self._waiting.pop(key, None)

    def _take(self, key: _Key) -> list[_Waiting]:
        """The oldest waiting queries, up to `max_queries` rows (at least one caller)."""
        queue = self._waiting[key]
        batch: list[_Waiting] = []
        rows = 0
        while queue and (not batch or rows + len(queue[0].queries) <= self.max_queries):
            item = queue.pop(0)
            if item.future.done():  # its caller went away (cancelled)
                continue
            batch.append(item)
            rows += len(item.queries)
        return batch

    async def _send(self, batch: list[_Waiting], params: SearchParams) -> None:
        """One fan-out for the whole batch; each caller gets its own rows of the answer."""
        if not batch:
            return
        queries = np.concatenate([item.queries for item in batch])
        left = min(item.deadline for item in batch) - asyncio.get_running_loop().time()
        try:
            choice = self._current(batch[0].choice)
            result = await self.fanout.search(choice, queries, params, max(left, _MIN_TIMEOUT_S))
        except asyncio.CancelledError:  # shutting down: nobody waits for an answer forever
            for item in batch:
                item.future.cancel()
            raise
        except Exception as exc:  # every caller of the batch sees the same failure
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        start = 0
        for item in batch:
            end = start + len(item.queries)
            if not item.future.done():
                item.future.set_result(
                    FanoutResult(
                        result.version,
                        result.partitions,
                        result.hits[start:end],
                        set(result.answered),
                        list(result.failures),
                    )
                )
            start = end

    def _current(self, choice: VersionChoice) -> VersionChoice:
        """`choice` as the registry sees it now (same version), else `choice` itself."""
        if self.refresh is None:
            return choice
        fresh = self.refresh(choice.collection, choice.version)
        return fresh if fresh is not None and fresh.covered else choice
