"""Micro-batching: coalesce concurrent requests into one forward pass.

A request announces itself (`expect`) when it starts decoding, puts its decoded item on
a bounded queue and awaits a future. One collector task takes the first waiting item,
then keeps taking while more are queued, and waits (at most `max_wait_s` after the
first) only while announced items are still decoding; then it hands the batch, at most
`max_batch` items, to a single worker thread. So a lone request runs at once, and a
burst of concurrent requests shares one forward pass instead of being split by a timer.
While the model runs, new requests keep decoding and queueing, so under load the next
batch is ready when the model is free.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from simsearch.common.errors import Overloaded

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

BatchObserver = Callable[[int, float], None]


@dataclass
class _Pending(Generic[T, R]):
    item: T
    future: asyncio.Future[R]


class MicroBatcher(Generic[T, R]):
    """Runs `fn(items) -> results` on batches of concurrently submitted items.

    `fn` runs in one dedicated thread (the model is not re-entrant and one forward pass
    already uses every intra-op thread). It must return one result per item, in order.
    """

    def __init__(
        self,
        fn: Callable[[Sequence[T]], Sequence[R]],
        max_batch: int,
        max_wait_s: float,
        queue_limit: int = 1024,
        observe: BatchObserver | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self._fn = fn
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._queue: asyncio.Queue[_Pending[T, R]] = asyncio.Queue(maxsize=queue_limit)
        self._observe = observe
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._task: asyncio.Task[None] | None = None
        self._incoming = 0
        self._arrived: asyncio.Event | None = None

    async def start(self) -> None:
        """Start the collector task on the running loop."""
        self._task = asyncio.create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        """Stop collecting, fail whatever still waits, and release the worker thread."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(Overloaded("service is shutting down"))
        self._worker.shutdown(wait=True)

    @property
    def depth(self) -> int:
        """Items waiting for a batch (for metrics and load shedding)."""
        return self._queue.qsize()

    @contextlib.contextmanager
    def expect(self) -> Iterator[None]:
        """Mark an item as on its way (decoding) so the collector waits for it."""
        self._incoming += 1
        try:
            yield
        finally:
            self._incoming -= 1
            if self._arrived is not None:
                self._arrived.set()

    def enqueue(self, item: T) -> asyncio.Future[R]:
        """Queue one item now and return the future of its result; 503 when full."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Pending(item, future))
        except asyncio.QueueFull:
            raise Overloaded(
                f"{self._queue.maxsize} images already wait for the model; retry later"
            ) from None
        return future

    async def submit(self, item: T) -> R:
        """Queue one item and wait for its result."""
        return await self.enqueue(item)

    async def submit_many(self, items: Sequence[T]) -> list[R]:
        """Queue several items; they may land in different batches."""
        return list(await asyncio.gather(*(self.submit(item) for item in items)))

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            await self._execute(batch)

    async def _collect(self) -> list[_Pending[T, R]]:
        batch = [await self._queue.get()]
        deadline = time.perf_counter() + self.max_wait_s
        self._arrived = asyncio.Event()
        while len(batch) < self.max_batch:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - time.perf_counter()
            if remaining <= 0 or self._incoming == 0:
                break
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
        return [p for p in batch if not p.future.done()]  # drop cancelled requests

    async def _execute(self, batch: list[_Pending[T, R]]) -> None:
        if not batch:
            return
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._worker, self._fn, [p.item for p in batch])
        except Exception as exc:  # the whole batch failed: every caller hears why
            log.exception("batch of %d failed", len(batch))
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        if self._observe is not None:
            self._observe(len(batch), time.perf_counter() - started)
        for pending, result in zip(batch, results, strict=True):
            if not pending.future.done():
                pending.future.set_result(result)
