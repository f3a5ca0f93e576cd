"""Fan-out and merge: decoded shard candidates merge into the exact global top-k, and
failing shards (injected by a fake `Upstream._request`) are retried elsewhere or flagged.

The healthy "shards" here answer from brute force over their partitions; the real shard
service is exercised in tests/integration/router/test_service.py. The transport is mocked
only so that errors, hangs and garbage can be injected on demand.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from simsearch.common.errors import UpstreamFailure
from simsearch.common.topk import merge
from simsearch.common.wire import (
    ShardCandidates,
    ShardInfo,
    ShardSearchRequest,
    ShardVersionInfo,
    decode_array,
    encode_array,
)
from simsearch.router.fanout import FanOut, FanoutResult, SearchParams, decode_candidates
from simsearch.router.metrics import RouterMetrics
from simsearch.router.registry import ShardRegistry
from simsearch.router.routing import choose_version
from simsearch.router.source import StaticSource
from simsearch.router.transport import Reply, Upstream

P, DIM, N = 8, 16, 400
VERSION = "v20250101T000000Z-aaaaaa"
RNG = np.random.default_rng(7)
X = RNG.standard_normal((N, DIM)).astype(np.float32)
X /= np.linalg.norm(X, axis=1, keepdims=True)
IDS = RNG.choice(2**40, N, replace=False).astype(np.int64)


def brute(q: np.ndarray, k: int, partitions: list[int] | None = None) -> np.ndarray:
    """Exact top-k ids over the given partitions (all by default)."""
    mask = np.ones(N, bool) if partitions is None else np.isin(IDS % P, partitions)
    scores = q @ X[mask].T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    result: np.ndarray = IDS[mask][order]
    return result


def answer(req: ShardSearchRequest) -> ShardCandidates:
    """What a healthy exact shard answers for `req` (approx = exact for a Flat index)."""
    q = decode_array(req.vectors_b64, "<f4", (req.nq, req.dim))
    kc = req.k * (req.refine or 1)
    mask = np.isin(IDS % P, req.partitions)
    ids, x = IDS[mask], X[mask]
    scores = q @ x.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :kc]
    top_ids = ids[order]
    top = np.take_along_axis(scores, order, axis=1).astype(np.float32)
    return ShardCandidates(
        version=req.version,
        nq=req.nq,
        width=top_ids.shape[1],
        ids_b64=encode_array(top_ids, "<i8"),
        approx_b64=encode_array(top, "<f4"),
        exact_b64=encode_array(top, "<f4"),
        paths=[[f"img/{i}.jpg" for i in row] for row in top_ids.tolist()],
        took_ms=0.1,
    )


def info(ordinal: int, ready: list[int]) -> ShardInfo:
    held = ShardVersionInfo(
        version=VERSION,
        partitions=P,
        ready=ready,
        dim=DIM,
        nprobe=1,
        refine=2,
        vectors=int(np.isin(IDS % P, ready).sum()),
        model="test",
    )
    return ShardInfo(
        ordinal=ordinal,
        replicas=2,
        index="default",
        ready=True,
        versions=[held],
        rss_bytes=0,
        version="test",
    )


JSON = "application/json"
SLOW_OK, SLOW_ERROR = 598, 597  # fake statuses: answer (or fail) after 0.5 s
ERROR = Reply(500, b'{"detail": "boom"}', JSON)
Behaviour = Callable[[ShardSearchRequest], Reply]


def healthy(req: ShardSearchRequest) -> Reply:
    return Reply(200, answer(req).model_dump_json().encode(), JSON)


@dataclass
class Run:
    result: FanoutResult
    metrics: RouterMetrics
    registry: ShardRegistry
    asked: dict[str, list[list[int]]]  # url -> the partition lists it was sent

    def errors(self, url: str, kind: str) -> float:
        value: float = self.metrics.shard_errors.labels(url, kind)._value.get()
        return value


def run_search(
    layout: dict[str, list[int]],
    behaviour: dict[str, Behaviour],
    q: np.ndarray,
    k: int = 10,
    timeout_s: float = 2.0,
    hedge_percentile: float | None = None,
) -> Run:
    """Poll the fake shards, plan and fan out one query batch; record who was asked what."""
    asked: dict[str, list[list[int]]] = {url: [] for url in layout}

    class FakeShards(Upstream):
        """Answers like shards would; the network is never touched."""

        async def _request(self, method: str, url: str, timeout_s: float, **kw: Any) -> Reply:
            base, _, path = url.rpartition("/")
            if path == "info":
                ordinal = sorted(layout).index(base)
                return Reply(200, info(ordinal, layout[base]).model_dump_json().encode(), JSON)
            req = ShardSearchRequest.model_validate_json(kw["data"])
            asked[base].append(req.partitions)
            response = behaviour.get(base, healthy)(req)
            if response.status == 599:  # "hang": answer after the deadline
                await asyncio.sleep(30)
            if response.status in (SLOW_OK, SLOW_ERROR):  # slow, then an answer or an error
                await asyncio.sleep(0.5)
                return healthy(req) if response.status == SLOW_OK else ERROR
            return response

    async def go() -> Run:
        upstream = FakeShards(None)
        registry = ShardRegistry(StaticSource(list(layout)), upstream, 60, 1.0)
        await registry.poll_once()
        for state in registry.states.values():  # a history: every shard answered in ~10 ms
            state.recent_ms.extend([10.0] * 50)
        choice = choose_version(registry.views())
        assert choice is not None
        metrics = RouterMetrics(CollectorRegistry())
        fanout = FanOut(
            upstream,
            registry,
            metrics,
            retry=True,
            first_try_share=0.5,
            hedge_percentile=hedge_percentile,
            hedge_min_s=0.005,
        )
        result = await fanout.search(choice, q, SearchParams(k), timeout_s)
        return Run(result, metrics, registry, asked)

    return asyncio.run(go())


def queries(nq: int = 3) -> np.ndarray:
    q = RNG.standard_normal((nq, DIM)).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def test_decoded_candidates_merge_into_the_exact_global_top_k() -> None:
    q = queries(4)
    parts = []
    for shard_partitions in ([0, 1, 2], [3, 4], [5, 6, 7]):
        req = ShardSearchRequest(
            version=VERSION,
            partitions=shard_partitions,
            k=10,
            refine=2,
            dim=DIM,
            nq=4,
            vectors_b64=encode_array(q, "<f4"),
        )
        decoded = decode_candidates(answer(req).model_dump_json().encode(), VERSION, 4)
        cands, paths = decoded.candidates, decoded.paths
        assert len(paths) == 4 and len(paths[0]) == cands.ids.shape[1]
        assert not decoded.exact_scan  # an index answer (the field's default)
        parts.append(cands)
    ids, scores = merge(parts, 10, 20)
    assert (ids == brute(q, 10)).all()
    assert (np.diff(scores, axis=1) <= 0).all()


def test_decode_refuses_an_answer_for_another_version() -> None:
    vectors = encode_array(queries(1), "<f4")
    req = ShardSearchRequest(
        version=VERSION, partitions=[0], k=1, dim=DIM, nq=1, vectors_b64=vectors
    )
    body = answer(req).model_dump_json().encode()
    with pytest.raises(ValueError, match="answered version"):
        decode_candidates(body, "v20990101T000000Z-ffffff", 1)


def ids_of(result: FanoutResult) -> np.ndarray:
    return np.array([[hit.id for hit in row] for row in result.hits])


def test_all_healthy_shards_give_the_exact_answer_with_full_coverage() -> None:
    q = queries(3)
    run = run_search({"http://a": [0, 1, 2, 3], "http://b": [4, 5, 6, 7]}, {}, q)
    assert run.result.coverage == 1.0 and not run.result.partial
    assert (ids_of(run.result) == brute(q, 10)).all()
    top = run.result.hits[0][0]
    assert top.path == f"img/{top.id}.jpg"
    assert sorted(p for calls in run.asked.values() for c in calls for p in c) == list(range(P))


def test_overlapping_holders_are_asked_each_partition_once() -> None:
    run = run_search({"http://a": list(range(8)), "http://b": list(range(8))}, {}, queries(1))
    assert run.result.coverage == 1.0
    assert sorted(p for calls in run.asked.values() for c in calls for p in c) == list(range(P))
    assert all(len(calls) == 1 for calls in run.asked.values())  # balanced, one call each


def test_a_failing_shard_is_retried_on_another_holder() -> None:
    q = queries(2)
    layout = {"http://a": list(range(8)), "http://b": [4, 5, 6, 7]}
    broken = {"http://b": lambda _: Reply(500, b'{"detail": "boom"}', JSON)}
    run = run_search(layout, broken, q)
    assert run.result.coverage == 1.0 and not run.result.partial
    assert (ids_of(run.result) == brute(q, 10)).all()
    assert run.asked["http://a"][-1] == run.asked["http://b"][0]  # the retry round
    assert run.errors("http://b", "status") == 1
    assert run.metrics.retries._value.get() == len(run.asked["http://b"][0])


def test_a_hanging_shard_is_cut_early_and_its_partitions_retried() -> None:
    layout = {"http://a": list(range(8)), "http://b": [4, 5, 6, 7]}
    hang = {"http://b": lambda _: Reply(599, b"", JSON)}
    run = run_search(layout, hang, queries(1), timeout_s=0.6)
    assert run.result.coverage == 1.0
    assert run.errors("http://b", "timeout") == 1
    assert run.registry.states["http://b"].up  # slow is not dead


def test_the_only_holder_failing_gives_a_flagged_partial_answer() -> None:
    q = queries(1)
    layout = {"http://a": [0, 1, 2, 3], "http://b": [4, 5, 6, 7]}
    garbage = {"http://b": lambda _: Reply(200, b'{"not": "candidates"}', JSON)}
    run = run_search(layout, garbage, q)
    assert run.result.partial and run.result.coverage == 0.5
    assert run.result.answered == {0, 1, 2, 3}
    assert ids_of(run.result)[0].tolist() == brute(q, 10, [0, 1, 2, 3])[0].tolist()
    assert run.errors("http://b", "payload") == 1


def test_an_unreachable_shard_is_marked_down_at_once() -> None:
    def refuse(_: ShardSearchRequest) -> Reply:
        raise UpstreamFailure("http://b", "connection refused", unreachable=True, timeout=False)

    run = run_search(
        {"http://a": [0, 1, 2, 3], "http://b": [4, 5, 6, 7]}, {"http://b": refuse}, queries(1)
    )
    assert run.result.partial and run.result.coverage == 0.5
    assert run.result.failures[0].kind == "unreachable"
    assert not run.registry.states["http://b"].up
    assert [v.url for v in run.registry.views()] == ["http://a"]


# --- hedging ----------------------------------------------------------------------------

BOTH = {"http://a": list(range(8)), "http://b": list(range(8))}


def second_call_fails() -> Behaviour:
    """A shard whose first call answers and whose later calls (the hedge) fail."""
    calls = []

    def behave(req: ShardSearchRequest) -> Reply:
        calls.append(req)
        return healthy(req) if len(calls) == 1 else ERROR

    return behave


def test_a_slow_shard_is_hedged_on_the_other_holder_and_each_partition_counts_once() -> None:
    q = queries(2)
    slow = {"http://b": lambda _: Reply(SLOW_OK, b"", JSON)}
    run = run_search(BOTH, slow, q, hedge_percentile=95)
    assert run.result.coverage == 1.0 and not run.result.failures
    assert (ids_of(run.result) == brute(q, 10)).all()  # no duplicate hits from the race
    assert run.metrics.hedges._value.get() == 1
    assert run.asked["http://a"][1] == run.asked["http://b"][0]  # b's partitions, on a too


def test_without_hedging_a_slow_shard_is_waited_for() -> None:
    slow = {"http://b": lambda _: Reply(SLOW_OK, b"", JSON)}
    run = run_search(BOTH, slow, queries(1))
    assert run.result.coverage == 1.0
    assert run.metrics.hedges._value.get() == 0
    assert len(run.asked["http://a"]) == 1


def test_a_failed_hedge_leaves_the_slow_shard_to_answer() -> None:
    q = queries(1)
    behaviour = {
        "http://a": second_call_fails(),
        "http://b": lambda _: Reply(SLOW_OK, b"", JSON),
    }
    run = run_search(BOTH, behaviour, q, hedge_percentile=95)
    assert run.result.coverage == 1.0 and not run.result.partial
    assert (ids_of(run.result) == brute(q, 10)).all()
    assert run.metrics.hedges._value.get() == 1


def test_when_the_shard_and_its_hedge_both_fail_the_answer_is_partial_and_flagged() -> None:
    q = queries(1)
    behaviour = {
        "http://a": second_call_fails(),
        "http://b": lambda _: Reply(SLOW_ERROR, b"", JSON),
    }
    run = run_search(BOTH, behaviour, q, hedge_percentile=95)
    assert run.result.partial and run.result.coverage == 0.5
    b_parts = run.asked["http://b"][0]
    assert (
        ids_of(run.result)[0].tolist()
        == brute(q, 10, sorted(set(range(P)) - set(b_parts)))[0].tolist()
    )
