"""The micro-batcher coalesces concurrent work, bounds its queue and reports failures."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from simsearch.common.errors import Overloaded
from simsearch.embedder.batcher import MicroBatcher


class Recorder:
    """A batch function that doubles numbers and remembers the batch sizes it saw."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.sizes: list[int] = []
        self.gate = gate

    def __call__(self, items: Sequence[int]) -> list[int]:
        if self.gate is not None:
            self.gate.wait(timeout=5)
        self.sizes.append(len(items))
        return [2 * i for i in items]


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_concurrent_submissions_share_batches_and_keep_order() -> None:
    fn = Recorder()

    async def main() -> list[int]:
        batcher = MicroBatcher(fn, max_batch=4, max_wait_s=0.05)
        await batcher.start()
        try:
            return await batcher.submit_many(list(range(10)))
        finally:
            await batcher.stop()

    assert run(main()) == [2 * i for i in range(10)]
    assert sum(fn.sizes) == 10
    assert max(fn.sizes) == 4
    assert len(fn.sizes) == 3


def test_a_lone_request_does_not_wait_for_company_that_is_not_coming() -> None:
    fn = Recorder()

    async def main() -> float:
        batcher = MicroBatcher(fn, max_batch=64, max_wait_s=30.0)
        await batcher.start()
        loop = asyncio.get_running_loop()
        started = loop.time()
        await batcher.submit(1)
        elapsed = loop.time() - started
        await batcher.stop()
        return elapsed

    elapsed = run(main())
    assert fn.sizes == [1]
    assert isinstance(elapsed, float) and elapsed < 5.0  # far below max_wait_s


def test_items_still_decoding_are_waited_for_and_share_the_batch() -> None:
    fn = Recorder()

    async def slow_decode(batcher: MicroBatcher[int, int], item: int, delay: float) -> int:
        with batcher.expect():
            await asyncio.sleep(delay)  # stands in for decoding in a thread
            future = batcher.enqueue(item)
        return await future

    async def main() -> list[int]:
        batcher = MicroBatcher(fn, max_batch=8, max_wait_s=5.0)
        await batcher.start()
        try:
            return list(
                await asyncio.gather(*(slow_decode(batcher, i, 0.01 * i) for i in range(4)))
            )
        finally:
            await batcher.stop()

    assert run(main()) == [0, 2, 4, 6]
    assert fn.sizes == [4]


def test_full_queue_is_refused_with_overloaded() -> None:
    gate = threading.Event()
    fn = Recorder(gate)

    async def main() -> None:
        batcher = MicroBatcher(fn, max_batch=1, max_wait_s=0.0, queue_limit=2)
        await batcher.start()
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.05)  # let the collector take item 0 into the (blocked) model
        queued = [asyncio.ensure_future(batcher.submit(i)) for i in (1, 2)]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            await batcher.submit(3)
        gate.set()
        assert await first == 0
        assert await asyncio.gather(*queued) == [2, 4]
        await batcher.stop()

    run(main())


def test_a_failing_batch_fails_every_caller_and_the_batcher_keeps_going() -> None:
    calls = {"n": 0}

    def flaky(items: Sequence[int]) -> list[int]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return list(items)

    async def main() -> None:
        batcher = MicroBatcher(flaky, max_batch=8, max_wait_s=0.02)
        await batcher.start()
        results = await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in results)
        assert await batcher.submit(5) == 5
        await batcher.stop()

    run(main())


def test_cancelled_requests_are_not_computed() -> None:
    gate = threading.Event()
    fn = Recorder(gate)

    async def main() -> None:
        batcher = MicroBatcher(fn, max_batch=1, max_wait_s=0.0)
        await batcher.start()
        blocker = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.05)
        doomed = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0)
        doomed.cancel()
        gate.set()
        await blocker
        assert await batcher.submit(2) == 4
        await batcher.stop()

    run(main())
    assert fn.sizes == [1, 1]
