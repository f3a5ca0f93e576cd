"""Send one query batch to the shards, retry what failed elsewhere, merge the answers.

One deadline per query covers everything. Each shard gets its explicit partition list
(`routing.assign`). A shard that fails (unreachable, error status, bad payload) or does not
answer in time loses its partitions to the other healthy holders that have them ready,
in one retry round inside the same deadline. So that a hung shard still leaves time for
that round, a shard with at least one partition that another shard also has ready gets
only `first_try_share` of the deadline on the first try; a shard that is the only holder
of everything it was asked gets all of it (nobody could take over its work anyway).

With hedging on (`hedge_percentile`), a first-round call to a shard whose partitions
other shards also have ready is hedged: if the shard has not answered after that
percentile of its recent answer times, the same partitions are planned on the other
holders and asked too; the first *complete* answer for them wins (the shard's own, or all
of the hedge's calls) and the rest is cancelled. Each partition is still answered once,
so no hit is counted twice.

The merge is `topk.merge`: the global top k·refine by approximate score, then the top k
by exact score, which is what one index over all partitions would return.

An exact fan-out (`SearchParams.exact`, the recall monitor's) asks every shard for its
brute-force scan; the result names the partitions whose shard answered from its index
instead (`FanoutResult.not_exact`), so the monitor never compares an index with itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np
from pydantic import ValidationError

from simsearch.common.errors import SimsearchError, UpstreamFailure
from simsearch.common.filters import Filter
from simsearch.common.topk import Candidates, merge
from simsearch.common.wire import (
    ShardCandidates,
    ShardSearchRequest,
    VectorSpace,
    decode_array,
    encode_array,
)
from simsearch.router.metrics import RouterMetrics
from simsearch.router.registry import ShardRegistry
from simsearch.router.routing import VersionChoice, assign
from simsearch.router.transport import Upstream

__all__ = [
    "FanOut",
    "FanoutResult",
    "Hit",
    "SearchParams",
    "ShardAnswer",
    "ShardFailure",
    "decode_candidates",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchParams:
    """What every shard is asked: k, the search knobs (None = the version's own) and the
    filter (checked against the version's schema before it gets here).

    `exact` asks for the brute-force scan instead of the index (the recall monitor's
    reference answer, `router/recall.py`); such a fan-out is never hedged and its shard
    times feed neither the latency preference nor the fan-out histogram, so the slow,
    low-priority scans do not move the foreground's numbers.

    Equal params may share one shard call (`coalesce.py`), so equality must cover the
    filter: it is compared by its JSON (`filter_key`, computed once), since the filter
    model itself holds lists and is not hashable.
    """

    k: int
    nprobe: int | None = None
    refine: int | None = None
    space: VectorSpace = "model"  # "index": queries are stored vectors (already projected)
    filter: Filter | None = field(default=None, compare=False)
    filter_key: str | None = field(default=None, init=False)
    exact: bool = False

    def __post_init__(self) -> None:
        if self.filter is not None:  # frozen: set once, here
            object.__setattr__(self, "filter_key", self.filter.model_dump_json())


@dataclass(frozen=True)
class Hit:
    """One result: id, exact cosine similarity, stored path (the image's key)."""

    id: int
    score: float
    path: str


@dataclass(frozen=True)
class ShardFailure:
    """A shard call that produced no usable answer, and the partitions it lost."""

    url: str
    kind: str  # unreachable | timeout | status | payload
    reason: str
    partitions: list[int]


@dataclass
class FanoutResult:
    """The merged hits per query and how complete they are."""

    version: str
    partitions: int  # P
    hits: list[list[Hit]]
    answered: set[int] = field(default_factory=set)
    failures: list[ShardFailure] = field(default_factory=list)
    # partitions whose shard was asked `exact` but answered from its index (a shard that
    # predates the field): the answer is then no reference for recall
    not_exact: set[int] = field(default_factory=set)

    @property
    def coverage(self) -> float:
        """Answered partitions / P."""
        return len(self.answered) / self.partitions

    @property
    def partial(self) -> bool:
        return len(self.answered) < self.partitions


class ShardAnswer(NamedTuple):
    """One shard's decoded candidates, their paths, and whether it ran the exact scan."""

    candidates: Candidates
    paths: list[list[str]]
    exact_scan: bool = False


_Outcomes = list[tuple[list[int], "ShardAnswer | ShardFailure"]]


def decode_candidates(body: bytes, version: str, nq: int) -> ShardAnswer:
    """A shard's `/search` body as arrays, checked against what we asked for.

    Raises ValueError (or a validation error) on a payload that does not fit, so that a
    confused shard counts as a failed shard instead of corrupting the merge.
    """
    answer = ShardCandidates.model_validate_json(body)
    if answer.version != version or answer.nq != nq:
        raise ValueError(
            f"answered version {answer.version} nq={answer.nq}, asked {version} nq={nq}"
        )
    shape = (nq, answer.width)
    if len(answer.paths) != nq or any(len(row) != answer.width for row in answer.paths):
        raise ValueError(f"paths do not match the {nq}×{answer.width} candidates")
    candidates = Candidates(
        decode_array(answer.ids_b64, "<i8", shape).astype(np.int64),
        decode_array(answer.approx_b64, "<f4", shape).astype(np.float32),
        decode_array(answer.exact_b64, "<f4", shape).astype(np.float32),
    )
    return ShardAnswer(candidates, answer.paths, answer.exact_scan)


class FanOut:
    """Plans, sends, retries and merges; shared by every query of the app."""

    def __init__(
        self,
        upstream: Upstream,
        registry: ShardRegistry,
        metrics: RouterMetrics,
        *,
        retry: bool = True,
        first_try_share: float = 0.6,
        hedge_percentile: float | None = None,
        hedge_min_s: float = 0.005,
    ) -> None:
        self.upstream = upstream
        self.registry = registry
        self.metrics = metrics
        self.retry = retry
        self.first_try_share = first_try_share
        self.hedge_percentile = hedge_percentile
        self.hedge_min_s = hedge_min_s

    async def search(
        self, choice: VersionChoice, queries: np.ndarray, params: SearchParams, timeout_s: float
    ) -> FanoutResult:
        """Top-k per query over every partition of `choice` that answers in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        started = time.perf_counter()
        request = ShardSearchRequest(
            version=choice.version,
            partitions=[],
            collection=choice.collection,
            k=params.k,
            nprobe=params.nprobe or choice.nprobe,
            refine=params.refine or choice.refine,
            dim=queries.shape[1],
            nq=len(queries),
            vectors_b64=encode_array(queries, "<f4"),
            space=params.space,
            filter=params.filter,
            exact=params.exact,
        )
        first = assign(choice, prefer=self._latency)
        answers, failures = await self._round(choice, request, first.by_shard, deadline, True)
        if failures and self.retry and loop.time() < deadline:
            lost = sorted({p for f in failures for p in f.partitions})
            again = assign(choice, lost, exclude={f.url for f in failures}, prefer=self._latency)
            if again.by_shard:
                self.metrics.retries.inc(sum(len(v) for v in again.by_shard.values()))
                more, failures2 = await self._round(
                    choice, request, again.by_shard, deadline, False
                )
                answers += more
                failures += failures2
        result = self._merge(choice, request, answers, failures)
        if not params.exact:
            self.metrics.fanout_latency.observe(time.perf_counter() - started)
        return result

    def _latency(self, url: str) -> float:
        """Smoothed latency of `url`: among equally loaded shards the faster one is asked."""
        state = self.registry.states.get(url)
        if state is None or state.latency_ms is None:
            return 0.0
        return state.latency_ms

    async def _round(
        self,
        choice: VersionChoice,
        request: ShardSearchRequest,
        assignments: dict[str, list[int]],
        deadline: float,
        first: bool,
    ) -> tuple[list[tuple[list[int], ShardAnswer]], list[ShardFailure]]:
        """Ask every assigned shard at once; split the outcomes into answers and failures."""
        remaining = deadline - asyncio.get_running_loop().time()
        calls = []
        for url, parts in assignments.items():
            budget = remaining
            single = request.model_copy(update={"partitions": parts})
            if first and self.retry and _has_other_holder(choice, url, parts):
                budget = remaining * self.first_try_share
                calls.append(self._ask_hedged(choice, url, single, budget, remaining))
            else:
                calls.append(self._ask_one(url, single, budget))
        answers: list[tuple[list[int], ShardAnswer]] = []
        failures: list[ShardFailure] = []
        for outcomes in await asyncio.gather(*calls):
            for parts, outcome in outcomes:
                if isinstance(outcome, ShardFailure):
                    failures.append(outcome)
                else:
                    answers.append((parts, outcome))
        return answers, failures

    async def _ask_one(self, url: str, request: ShardSearchRequest, timeout_s: float) -> _Outcomes:
        return [(request.partitions, await self._ask(url, request, timeout_s))]

    async def _ask_hedged(
        self,
        choice: VersionChoice,
        url: str,
        request: ShardSearchRequest,
        budget: float,
        remaining: float,
    ) -> _Outcomes:
        """`_ask`, plus the same partitions on other holders if `url` is slow (see module).

        Returns the outcomes to merge: the shard's own answer, or the hedge's answers. When
        both sides fail, the hedge's outcomes are returned with a failure of `url` that
        carries no partitions, so the retry round avoids `url` without asking any partition
        twice.
        """
        parts = request.partitions
        primary = asyncio.ensure_future(self._ask(url, request, budget))
        delay = None if request.exact else self._hedge_delay(url)
        if delay is None or delay >= budget:
            return [(parts, await primary)]
        done, _ = await asyncio.wait({primary}, timeout=delay)
        if done:
            return [(parts, primary.result())]
        backup = assign(choice, parts, exclude={url}, prefer=self._latency)
        if backup.uncovered or not backup.by_shard:
            return [(parts, await primary)]
        self.metrics.hedges.inc()
        left = remaining - delay
        group = asyncio.ensure_future(
            asyncio.gather(
                *(
                    self._ask_one(other, request.model_copy(update={"partitions": p}), left)
                    for other, p in backup.by_shard.items()
                )
            )
        )
        pending: set[asyncio.Future[Any]] = {primary, group}
        hedged: _Outcomes = []
        while pending:
            finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if primary in finished and not isinstance(primary.result(), ShardFailure):
                group.cancel()
                return [(parts, primary.result())]
            if group in finished:
                hedged = [item for outcomes in group.result() for item in outcomes]
                if not any(isinstance(o, ShardFailure) for _, o in hedged):
                    primary.cancel()
                    return hedged
        failed = primary.result()
        assert isinstance(failed, ShardFailure)  # else it would have won above
        return [*hedged, ([], replace(failed, partitions=[]))]

    def _hedge_delay(self, url: str) -> float | None:
        """Seconds to wait for `url` before hedging; None when hedging is off or unknown."""
        if self.hedge_percentile is None:
            return None
        state = self.registry.states.get(url)
        ms = state.latency_percentile(self.hedge_percentile) if state is not None else None
        return None if ms is None else max(self.hedge_min_s, ms / 1000)

    async def _ask(
        self, url: str, request: ShardSearchRequest, timeout_s: float
    ) -> ShardAnswer | ShardFailure:
        """One shard call; never raises: a failure is returned, counted and logged."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_s):
                body = request.model_dump_json().encode()
                reply = await self.upstream.post_json(f"{url}/search", body, timeout_s)
        except TimeoutError:
            return self._failed(
                url, "timeout", f"no answer within {timeout_s * 1000:.0f} ms", request.partitions
            )
        except UpstreamFailure as exc:
            if exc.unreachable:
                self.registry.mark_down(url, exc.reason)
            kind = "timeout" if exc.timeout else "unreachable"
            return self._failed(url, kind, exc.reason, request.partitions)
        if not reply.ok:
            if 400 <= reply.status < 500:  # its partitions changed since the last poll
                self.registry.refresh_soon()
            reason = f"HTTP {reply.status}: {reply.detail()}"
            return self._failed(url, "status", reason, request.partitions)
        try:
            answer = decode_candidates(reply.body, request.version, request.nq)
        except (ValueError, ValidationError, SimsearchError) as exc:
            return self._failed(url, "payload", f"unusable answer: {exc}", request.partitions)
        state = self.registry.states.get(url)
        if state is not None and not request.exact:
            state.observe_latency((time.perf_counter() - started) * 1000)
        return answer

    def _failed(self, url: str, kind: str, reason: str, partitions: list[int]) -> ShardFailure:
        self.metrics.shard_errors.labels(url, kind).inc()
        log.warning(
            "shard %s failed (%s): %s",
            url,
            kind,
            reason,
            extra={"shard": url, "kind": kind, "partitions": len(partitions)},
        )
        return ShardFailure(url, kind, reason, partitions)

    def _merge(
        self,
        choice: VersionChoice,
        request: ShardSearchRequest,
        answers: list[tuple[list[int], ShardAnswer]],
        failures: list[ShardFailure],
    ) -> FanoutResult:
        """Global top k·refine by approximate score, then top k by exact score."""
        nq, k = request.nq, request.k
        answered = {p for parts, _ in answers for p in parts}
        result = FanoutResult(
            choice.version, choice.partitions, [[] for _ in range(nq)], answered, failures
        )
        if request.exact:
            result.not_exact = {p for parts, a in answers if not a.exact_scan for p in parts}
        if not answers:
            return result
        paths: list[dict[int, str]] = [{} for _ in range(nq)]
        for _, answer in answers:
            for q in range(nq):
                paths[q].update(
                    zip(answer.candidates.ids[q].tolist(), answer.paths[q], strict=True)
                )
        ids, scores = merge([a.candidates for _, a in answers], k, k * (request.refine or 1))
        for q in range(nq):
            result.hits[q] = [
                Hit(int(i), float(s), paths[q].get(int(i), ""))
                for i, s in zip(ids[q].tolist(), scores[q].tolist(), strict=True)
                if i >= 0
            ]
        return result


def _has_other_holder(choice: VersionChoice, url: str, partitions: list[int]) -> bool:
    """Whether any of these partitions is also ready on another shard (a retry can help)."""
    return any(
        other != url and not ready.isdisjoint(partitions) for other, ready in choice.holders.items()
    )
