"""Coalescing: concurrent queries share one fan-out, and each caller gets its own rows."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from pydantic import TypeAdapter

from simsearch.common.filters import Filter
from simsearch.router.coalesce import Coalescer, coalescing_key
from simsearch.router.fanout import FanoutResult, Hit, SearchParams
from simsearch.router.routing import VersionChoice

FILTER: TypeAdapter[Filter] = TypeAdapter(Filter)


class RecordingFanOut:
    """Answers each query row with one hit whose id is the row's first value."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[int] = []
        self.fail = fail

    async def search(
        self, choice: Any, queries: np.ndarray, params: SearchParams, timeout_s: float
    ) -> FanoutResult:
        self.calls.append(len(queries))
        await asyncio.sleep(0.01)  # in flight: later callers queue up meanwhile
        if self.fail:
            raise RuntimeError("shards down")
        hits = [[Hit(int(row[0]), 1.0, f"p{int(row[0])}")] for row in queries]
        return FanoutResult(choice.version, 4, hits, {0, 1, 2, 3})


def choice(holder: str = "http://shard-0", collection: str = "default") -> VersionChoice:
    """Version v1 with all 4 partitions on `holder`: the name tells which plan a batch used."""
    everything = frozenset({0, 1, 2, 3})
    return VersionChoice(
        collection=collection,
        version="v1",
        partitions=4,
        dim=4,
        nprobe=1,
        refine=1,
        model="m",
        holders={holder: everything},
        covered=everything,
    )


def run(coalescer: Coalescer, values: list[int], k: int = 10) -> list[Any]:
    async def main() -> list[Any]:
        calls = [
            coalescer.search(choice(), np.full((1, 4), v, np.float32), SearchParams(k), 1.0)
            for v in values
        ]
        return await asyncio.gather(*calls, return_exceptions=True)

    return asyncio.run(main())


def test_a_lone_query_goes_out_at_once_and_a_burst_shares_one_call() -> None:
    fanout = RecordingFanOut()
    results = run(Coalescer(fanout, max_queries=32), list(range(9)))  # type: ignore[arg-type]
    assert [r.hits[0][0].id for r in results] == list(range(9))  # each caller: its own row
    assert all(r.coverage == 1.0 for r in results)
    assert fanout.calls == [9]  # all arrived before the first was sent: one call
    alone = RecordingFanOut()
    run(Coalescer(alone, max_queries=32), [5])  # type: ignore[arg-type]
    assert alone.calls == [1]


def test_batches_are_capped() -> None:
    fanout = RecordingFanOut()
    results = run(Coalescer(fanout, max_queries=3), list(range(7)))  # type: ignore[arg-type]
    assert [r.hits[0][0].id for r in results] == list(range(7))
    assert fanout.calls == [3, 3, 1]


def test_a_failed_fanout_fails_every_caller_of_the_batch() -> None:
    results = run(Coalescer(RecordingFanOut(fail=True), max_queries=8), [1, 2, 3])  # type: ignore[arg-type]
    assert all(isinstance(r, RuntimeError) for r in results)


def test_different_parameters_are_never_mixed() -> None:
    fanout = RecordingFanOut()
    coalescer = Coalescer(fanout, max_queries=32)  # type: ignore[arg-type]

    async def main() -> list[Any]:
        q = np.zeros((1, 4), np.float32)
        return await asyncio.gather(
            *(coalescer.search(choice(), q, SearchParams(k), 1.0) for k in (5, 10, 5, 10))
        )

    answers = asyncio.run(main())
    assert sorted(fanout.calls) == [2, 2]  # k=5 together, k=10 together, never both
    assert all(len(a.hits) == 1 for a in answers)


def test_different_collections_and_filters_are_never_mixed() -> None:
    """A shard call carries one collection and one filter: queries that differ in either
    go out apart; equal filters (compared by their JSON) still share a call."""
    fanout = RecordingFanOut()
    coalescer = Coalescer(fanout, max_queries=32)  # type: ignore[arg-type]
    tulips = {"field": "label", "eq": "tulips"}
    roses = {"field": "label", "eq": "roses"}

    def params(f: dict[str, str] | None) -> SearchParams:
        return SearchParams(5, filter=None if f is None else FILTER.validate_python(f))

    asks = [("cats", tulips), ("dogs", tulips), ("cats", roses), ("cats", None), ("cats", tulips)]

    async def main() -> list[Any]:
        q = np.zeros((1, 4), np.float32)
        return await asyncio.gather(
            *(coalescer.search(choice(collection=c), q, params(f), 1.0) for c, f in asks)
        )

    asyncio.run(main())
    assert sorted(fanout.calls) == [1, 1, 1, 2]  # only the two (cats, tulips) together


def test_the_coalescing_key_holds_collection_version_and_the_filter_json() -> None:
    a = SearchParams(5, filter=FILTER.validate_python({"field": "x", "in": [1, 2]}))
    b = SearchParams(5, filter=FILTER.validate_python({"field": "x", "in": [1, 2]}))
    assert a == b and hash(a) == hash(b) and a.filter_key == '{"field":"x","in":[1,2]}'
    assert a != SearchParams(5) and SearchParams(5).filter_key is None
    assert coalescing_key(choice(collection="cats"), a) == ("cats", "v1", b)
    assert coalescing_key(choice(collection="cats"), a) != coalescing_key(choice(), a)


@pytest.mark.parametrize("n", [1, 2])
def test_nothing_is_left_waiting(n: int) -> None:
    coalescer = Coalescer(RecordingFanOut(), max_queries=8)  # type: ignore[arg-type]
    run(coalescer, list(range(n)))
    assert not coalescer._waiting and not coalescer._draining


class SlowFanOut:
    """Each call takes `delay_s`; records the timeout and the holders it was given."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.timeouts: list[float] = []
        self.holders: list[list[str]] = []

    async def search(
        self, choice: VersionChoice, queries: np.ndarray, params: SearchParams, timeout_s: float
    ) -> FanoutResult:
        self.timeouts.append(timeout_s)
        self.holders.append(sorted(choice.holders))
        await asyncio.sleep(self.delay_s)
        hits = [[Hit(int(row[0]), 1.0, f"p{int(row[0])}")] for row in queries]
        return FanoutResult(choice.version, 4, hits, {0, 1, 2, 3})


def test_a_queued_batch_gets_what_is_left_of_its_deadline_and_a_fresh_plan() -> None:
    """Behind a stalled batch, later queries must neither restart their deadline (the
    whole query is bounded by it) nor use a plan made before the stall."""
    fanout = SlowFanOut(0.2)
    coalescer = Coalescer(fanout, 32, refresh=lambda c, v: choice("fresh"))  # type: ignore[arg-type]

    async def main() -> None:
        q = np.zeros((1, 4), np.float32)
        first = asyncio.ensure_future(coalescer.search(choice("old"), q, SearchParams(5), 1.0))
        await asyncio.sleep(0.01)
        await coalescer.search(choice("old"), q, SearchParams(5), 1.0)
        await first

    asyncio.run(main())
    assert fanout.timeouts[0] == pytest.approx(1.0, abs=0.02)
    assert fanout.timeouts[1] == pytest.approx(0.8, abs=0.05)  # 1.0 - 0.01 queued - 0.2 stall
    assert fanout.holders == [["fresh"], ["fresh"]]
