"""The recall monitor end to end in one process: sampled answers re-run through the real
fan-out against fake shards (a fake `Upstream._request`, as in test_fanout.py), compared,
windowed, reported in `/stats` rows and in the metrics.

The fake shards answer an `exact` request by brute force over their partitions and say
so (`exact_scan`), unless told to behave like a shard that predates the field; they
report a build-time probe and drift ratios in `/info`, as the real ones do. The real
shard side is exercised in tests/integration/cluster/test_recall.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from simsearch.common.settings import load_settings
from simsearch.common.wire import (
    ShardCandidates,
    ShardInfo,
    ShardSearchRequest,
    ShardVersionInfo,
    decode_array,
    encode_array,
)
from simsearch.router import status
from simsearch.router.fanout import FanOut, FanoutResult, Hit, SearchParams
from simsearch.router.metrics import RouterMetrics
from simsearch.router.recall import RecallMonitor
from simsearch.router.registry import ShardRegistry
from simsearch.router.routing import choose_version, versions
from simsearch.router.settings import RouterSettings
from simsearch.router.source import StaticSource
from simsearch.router.transport import Reply, Upstream

P, DIM, N, K = 4, 8, 200, 5
VERSION = "v20250101T000000Z-aaaaaa"
RNG = np.random.default_rng(11)
X = RNG.standard_normal((N, DIM)).astype(np.float32)
X /= np.linalg.norm(X, axis=1, keepdims=True)
IDS = np.arange(N, dtype=np.int64) * 13 + 5
LAYOUT = {"http://a": [0, 1], "http://b": [2, 3]}
JSON = "application/json"


def brute(q: np.ndarray, k: int, partitions: list[int]) -> tuple[np.ndarray, np.ndarray]:
    mask = np.isin(IDS % P, partitions)
    scores = q @ X[mask].T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return IDS[mask][order], np.take_along_axis(scores, order, axis=1).astype(np.float32)


def exact_answer(req: ShardSearchRequest, exact_scan: bool = True) -> Reply:
    q = decode_array(req.vectors_b64, "<f4", (req.nq, req.dim))
    ids, scores = brute(q, req.k, req.partitions)
    body = ShardCandidates(
        version=req.version,
        nq=req.nq,
        width=ids.shape[1],
        ids_b64=encode_array(ids, "<i8"),
        approx_b64=encode_array(scores, "<f4"),
        exact_b64=encode_array(scores, "<f4"),
        paths=[["" for _ in row] for row in ids.tolist()],
        took_ms=1.0,
        exact_scan=exact_scan,
    )
    return Reply(200, body.model_dump_json().encode(), JSON)


def info(ordinal: int, ready: list[int], drift_ratio: float | None) -> ShardInfo:
    held = ShardVersionInfo(
        version=VERSION,
        partitions=P,
        ready=ready,
        dim=DIM,
        nprobe=2,
        refine=2,
        vectors=int(np.isin(IDS % P, ready).sum()),
        model="test",
        recall_probe=0.97,
        probe_queries=100,
        drift_ratio=drift_ratio,
    )
    return ShardInfo(
        ordinal=ordinal, replicas=2, index="default", ready=True, versions=[held],
        rss_bytes=0, version="test",
    )  # fmt: skip


Behaviour = Callable[[ShardSearchRequest], Reply]


@dataclass
class Harness:
    monitor: RecallMonitor
    registry: ShardRegistry
    prometheus: CollectorRegistry
    asked: list[ShardSearchRequest] = field(default_factory=list)

    def value(self, name: str, **labels: str) -> float | None:
        return self.prometheus.get_sample_value(name, labels)

    def checks(self, outcome: str) -> float:
        return self.value("simsearch_recall_checks_total", outcome=outcome) or 0.0


def run(
    test: Callable[[Harness], Awaitable[None]],
    behaviour: dict[str, Behaviour] | None = None,
    layout: dict[str, list[int]] = LAYOUT,
    delay_s: float = 0.0,
    **overrides: Any,
) -> None:
    """A polled registry over the fake shards, the real fan-out and a monitor; `test` runs
    inside the event loop with the monitor's task started."""
    drift = {"http://a": 1.1, "http://b": 1.6}

    async def go() -> None:
        harness: Harness

        class FakeShards(Upstream):
            async def _request(self, method: str, url: str, timeout_s: float, **kw: Any) -> Reply:
                base, _, path = url.rpartition("/")
                if path == "info":
                    ordinal = sorted(layout).index(base)
                    body = info(ordinal, layout[base], drift[base])
                    return Reply(200, body.model_dump_json().encode(), JSON)
                req = ShardSearchRequest.model_validate_json(kw["data"])
                harness.asked.append(req)
                await asyncio.sleep(delay_s)
                return (behaviour or {}).get(base, exact_answer)(req)

        upstream = FakeShards(None)
        registry = ShardRegistry(StaticSource(list(layout)), upstream, 60, 1.0)
        await registry.poll_once()
        prometheus = CollectorRegistry()
        metrics = RouterMetrics(prometheus)
        fanout = FanOut(upstream, registry, metrics, hedge_percentile=50, hedge_min_s=0.0)
        given = {
            "recall_fraction": 1.0,
            "recall_max_per_s": 1000,
            "recall_window_s": 60,
            "recall_linger_s": 0,
        }
        settings = load_settings(
            RouterSettings, shards="http://shard-a:8002", **{**given, **overrides}
        )

        def lookup(collection: str, version: str) -> Any:
            found = versions(registry.views(), collection)
            return next((c for c in found if c.version == version), None)

        monitor = RecallMonitor(
            settings, fanout, lookup, lambda: registry.states.values(), metrics.recall
        )
        harness = Harness(monitor, registry, prometheus)
        monitor.start()
        try:
            await test(harness)
        finally:
            await monitor.stop()

    asyncio.run(go())


def queries(nq: int, seed: int = 0) -> np.ndarray:
    q = np.random.default_rng(seed).standard_normal((nq, DIM)).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def approximate(q: np.ndarray, misses: int) -> FanoutResult:
    """What an index might answer: the true top K with the last `misses` replaced by rows
    from far down the ranking (their exact scores are their own)."""
    ids, scores = brute(q, N, list(range(P)))
    hits = []
    for row_ids, row_scores in zip(ids, scores, strict=True):
        keep = list(range(K - misses)) + list(range(N - misses, N))
        hits.append([Hit(int(row_ids[j]), float(row_scores[j]), "") for j in keep])
    return FanoutResult(VERSION, P, hits, set(range(P)))


async def settled(harness: Harness, outcome_total: float, timeout_s: float = 5.0) -> None:
    """Wait until this many drawn queries have an outcome (polled, with a deadline)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    outcomes = ("ok", "failed", "partial", "not_exact", "queue_full", "rate_limited")
    while sum(harness.checks(o) for o in outcomes) < outcome_total:
        assert loop.time() < deadline, "the monitor did not get through its queue"
        await asyncio.sleep(0.01)


def test_sampled_queries_are_re_run_exactly_and_windowed_per_version() -> None:
    async def test(h: Harness) -> None:
        q = queries(6)
        h.monitor.offer("default", approximate(q[:4], misses=1), q[:4], SearchParams(K, nprobe=1))
        h.monitor.offer("default", approximate(q[4:], misses=0), q[4:], SearchParams(K))
        await settled(h, 6)
        assert h.checks("ok") == 6
        assert all(req.exact for req in h.asked)
        assert len(h.asked) == 2  # all six in one request per shard: same k, space, filter
        expected = (4 * (K - 1) / K + 2 * 1.0) / 6
        labels = {"collection": "default", "version": VERSION}
        assert abs((h.value("simsearch_recall_at_k", **labels) or 0) - expected) < 1e-9
        assert h.value("simsearch_recall_samples", **labels) == 6
        assert h.value("simsearch_recall_baseline", **labels) == 0.97
        assert h.value("simsearch_recall_drift", **labels) == 0.0  # 6 < 30 samples
        assert h.value("simsearch_recall_at_k_query_count", collection="default") == 6
        (row,) = h.monitor.report()
        assert row.samples == 6 and row.window_s == 60 and row.baseline == 0.97
        assert row.drift_ratio == 1.6  # the larger of the two shards' ratios
        stats = status.stats(list(h.registry.states.values()), 0.0, recall=h.monitor.report())
        assert stats.recall == [row]

    run(test)


def test_live_recall_well_below_the_baseline_is_flagged_after_enough_samples() -> None:
    async def test(h: Harness) -> None:
        q = queries(8, seed=3)
        h.monitor.offer("default", approximate(q, misses=2), q, SearchParams(K))  # 0.6
        await settled(h, 8)
        (row,) = h.monitor.report()
        assert row.recall is not None and abs(row.recall - 0.6) < 1e-9 and row.drift
        labels = {"collection": "default", "version": VERSION}
        assert h.value("simsearch_recall_drift", **labels) == 1.0

    run(test, recall_min_samples=8)


def test_a_shard_that_ignores_exact_makes_the_samples_not_exact() -> None:
    async def test(h: Harness) -> None:
        q = queries(3)
        h.monitor.offer("default", approximate(q, misses=0), q, SearchParams(K))
        await settled(h, 3)
        assert h.checks("not_exact") == 3 and h.checks("ok") == 0
        (row,) = h.monitor.report()  # the baseline alone: no sample
        assert row.recall is None and row.samples == 0 and row.baseline == 0.97

    run(test, {"http://b": lambda req: exact_answer(req, exact_scan=False)})


def test_a_partial_exact_answer_is_dropped_and_a_total_failure_is_failed() -> None:
    down = Reply(500, b'{"detail": "boom"}', JSON)

    async def partial(h: Harness) -> None:
        q = queries(2)
        h.monitor.offer("default", approximate(q, misses=0), q, SearchParams(K))
        await settled(h, 2)
        assert h.checks("partial") == 2

    async def failed(h: Harness) -> None:
        q = queries(2)
        h.monitor.offer("default", approximate(q, misses=0), q, SearchParams(K))
        await settled(h, 2)
        assert h.checks("failed") == 2

    run(partial, {"http://b": lambda _: down})
    run(failed, {"http://a": lambda _: down, "http://b": lambda _: down})


def test_the_task_survives_a_bug_and_a_version_nobody_serves() -> None:
    async def test(h: Harness) -> None:
        q = queries(2)
        gone = approximate(q, misses=0)
        gone.version = "v20240101T000000Z-bbbbbb"
        h.monitor.offer("default", gone, q, SearchParams(K))
        await settled(h, 2)
        assert h.checks("failed") == 2
        real_search = h.monitor.fanout.search

        async def broken(*args: Any, **kw: Any) -> FanoutResult:
            raise RuntimeError("a bug in the fan-out")

        h.monitor.fanout.search = broken  # type: ignore[method-assign]
        h.monitor.offer("default", approximate(q, misses=0), q, SearchParams(K))
        await settled(h, 4)
        assert h.checks("failed") == 4
        h.monitor.fanout.search = real_search  # type: ignore[method-assign]
        h.monitor.offer("default", approximate(q, misses=0), q, SearchParams(K))
        await settled(h, 6)
        assert h.checks("ok") == 2

    run(test)


def test_windows_of_versions_nobody_serves_are_dropped_from_the_report() -> None:
    async def test(h: Harness) -> None:
        q = queries(2)
        h.monitor.offer("default", approximate(q, misses=0), q, SearchParams(K))
        await settled(h, 2)
        assert len(h.monitor.report()) == 1
        for state in h.registry.states.values():
            state.up = False  # nobody serves the version any more
        assert h.monitor.report() == []
        text = h.value("simsearch_recall_samples", collection="default", version=VERSION)
        assert text is None

    run(test)


def test_exact_fan_outs_are_not_hedged_and_leave_shard_latency_alone() -> None:
    async def test(h: Harness) -> None:
        for state in h.registry.states.values():
            state.recent_ms.extend([0.001] * 50)  # any call would be hedged at once
        before = {url: len(s.recent_ms) for url, s in h.registry.states.items()}
        q = queries(3)
        h.monitor.offer("default", approximate(q, misses=0), q, SearchParams(K))
        await settled(h, 3)
        assert h.checks("ok") == 3 and len(h.asked) == 2  # one call per shard, no hedge
        assert {url: len(s.recent_ms) for url, s in h.registry.states.items()} == before
        choice = choose_version(h.registry.views())
        assert choice is not None and choice.complete

    both = {"http://a": [0, 1, 2, 3], "http://b": [0, 1, 2, 3]}  # another holder for each
    run(test, layout=both, delay_s=0.05)  # slower than every answer the shards gave before


def test_sampling_off_starts_no_task() -> None:
    async def test(h: Harness) -> None:
        assert h.monitor._task is None
        q = queries(2)
        h.monitor.offer("default", approximate(q, misses=0), q, SearchParams(K))
        assert h.monitor.sampler.queue.qsize() == 0

    run(test, recall_fraction=0.0)


def test_a_failing_report_leaves_the_scrape_working() -> None:
    prometheus = CollectorRegistry()
    metrics = RouterMetrics(prometheus)

    def broken() -> list[Any]:
        raise RuntimeError("a bug in the report")

    metrics.recall.bind(broken)
    assert prometheus.get_sample_value("simsearch_recall_checks_total", {"outcome": "ok"}) == 0
    assert prometheus.get_sample_value("simsearch_router_coverage") == 0


def test_samples_arriving_within_the_linger_share_one_exact_request() -> None:
    async def test(h: Harness) -> None:
        q = queries(3, seed=5)
        for row in range(3):  # one at a time, as a slow trickle of sampled queries
            h.monitor.offer(
                "default", approximate(q[row : row + 1], 0), q[row : row + 1], SearchParams(K)
            )
            await asyncio.sleep(0.05)
        await settled(h, 3)
        assert h.checks("ok") == 3
        assert len(h.asked) == 2  # one request per shard for the three: batched, not 3 × 2

    run(test, recall_linger_s=1.0, recall_batch=3)
