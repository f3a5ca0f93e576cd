"""A steady query load on a running router, recording every answer.

The elasticity promises ("zero failed requests while scaling, killing a shard or
flipping the index version") are claims about *every* request sent while something
changes, so they are checked by sending queries at a fixed rate for the whole change and
keeping each answer: status, version, coverage, the partial flag and the ids returned.
`QueryLoad` does that from a background thread with its own event loop (so a test or a
benchmark can go on driving the cluster synchronously), and `summarise` turns the
samples into the figures the acceptance asks for.

The load is open-loop: request i is due at `i / rate` seconds, whatever the previous
ones did, so a slow cluster shows as latency and lateness, not as a quietly lower rate.
At most `concurrency` requests are in flight; the achieved rate is reported.

The queries go through `simsearch.client.AsyncClient` with retries off
(`RetryPolicy(attempts=1)`): the load must see every failure, not the client's recovery
from it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx
import numpy as np

from simsearch.client import ApiError, AsyncClient, ClientError, RetryPolicy, Timeouts

__all__ = ["LoadSummary", "QueryLoad", "Sample", "recovery_times", "summarise"]


@dataclass(frozen=True)
class Sample:
    """One request: when it was sent (load clock, seconds), what came back."""

    sent: float
    latency_ms: float
    status: int  # HTTP status; 0 when no usable answer came (connection error, timeout)
    query: int  # index of the query vector used
    version: str = ""
    coverage: float = 0.0
    partial: bool = False
    ids: tuple[int, ...] = ()
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass
class LoadSummary:
    """What the acceptance figures are read from."""

    sent: int
    failed: int  # not a 200 (including transport errors and timeouts)
    achieved_qps: float
    partial_flagged: int  # coverage < 1 and flagged partial: allowed
    partial_unflagged: int  # coverage < 1 without the flag: never allowed
    versions: dict[str, int]
    p50_ms: float
    p99_ms: float
    errors: list[str] = field(default_factory=list)  # a few, for the report


class QueryLoad:
    """`POST {url}/search/vector` at `rate` per second until `stop()`; keeps every sample."""

    def __init__(
        self,
        url: str,
        queries: np.ndarray,
        rate: float,
        *,
        k: int = 10,
        concurrency: int = 16,
        timeout_s: float = 10.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.queries = [q.tolist() for q in queries]
        self.k = k
        self.rate = rate
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.headers = dict(headers or {})
        self.samples: list[Sample] = []
        self._started = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def now(self) -> float:
        """Seconds on the load's clock (what `Sample.sent` is measured in)."""
        return time.monotonic() - self._started

    def start(self) -> QueryLoad:
        self._started = time.monotonic()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[Sample]:
        """Stop sending, wait for the requests in flight, return every sample (by send time)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout_s + 5)
        return sorted(self.samples, key=lambda s: s.sent)

    def __enter__(self) -> QueryLoad:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _client(self) -> AsyncClient:
        """No retries (every failure is a sample), one deadline per query, a pool as large
        as the concurrency."""
        return AsyncClient(
            self.url,
            headers=self.headers,
            retry=RetryPolicy(attempts=1),
            timeouts=Timeouts(self.timeout_s, self.timeout_s, self.timeout_s),
            limits=httpx.Limits(max_connections=self.concurrency),
        )

    async def _run(self) -> None:
        limit = asyncio.Semaphore(self.concurrency)
        async with self._client() as client:
            tasks: set[asyncio.Task[None]] = set()
            i = 0
            while not self._stop.is_set():
                delay = i / self.rate - self.now()
                if delay > 0:
                    await asyncio.sleep(delay)
                await limit.acquire()
                task = asyncio.create_task(self._one(client, i % len(self.queries), limit))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
            if tasks:
                await asyncio.gather(*tasks)

    async def _one(self, client: AsyncClient, q: int, limit: asyncio.Semaphore) -> None:
        sent = self.now()
        try:
            answer = await client.search_vector(self.queries[q], k=self.k)
        except ApiError as err:
            self.samples.append(self._failed(sent, err.status, q, err.detail[:300]))
            return
        except ClientError as err:
            self.samples.append(self._failed(sent, 0, q, f"{type(err).__name__}: {err}"))
            return
        finally:
            limit.release()
        latency_ms = (self.now() - sent) * 1000
        ids = tuple(hit.id for hit in answer.results)
        self.samples.append(
            Sample(sent, latency_ms, 200, q, answer.index_version, answer.coverage,
                   answer.partial, ids)
        )  # fmt: skip

    def _failed(self, sent: float, status: int, q: int, error: str) -> Sample:
        return Sample(sent, (self.now() - sent) * 1000, status, q, error=error)


def summarise(samples: Sequence[Sample]) -> LoadSummary:
    """Counts, achieved rate and latency percentiles of a finished load."""
    span = (samples[-1].sent - samples[0].sent) if len(samples) > 1 else 0.0
    latencies = np.array([s.latency_ms for s in samples if s.ok]) if samples else np.zeros(0)
    gaps = [s for s in samples if s.ok and s.coverage < 1.0]
    return LoadSummary(
        sent=len(samples),
        failed=sum(not s.ok for s in samples),
        achieved_qps=round((len(samples) - 1) / span, 1) if span > 0 else 0.0,
        partial_flagged=sum(s.partial for s in gaps),
        partial_unflagged=sum(not s.partial for s in gaps),
        versions=dict(Counter(s.version for s in samples if s.ok)),
        p50_ms=round(float(np.percentile(latencies, 50)), 1) if len(latencies) else 0.0,
        p99_ms=round(float(np.percentile(latencies, 99)), 1) if len(latencies) else 0.0,
        errors=sorted({f"{s.status} {s.error}" for s in samples if not s.ok})[:5],
    )


def recovery_times(samples: Sequence[Sample], steps: Sequence[float]) -> list[float]:
    """For each step (load-clock time a change began): seconds until coverage was back to 100 %.

    That is the time from the step to the last incomplete answer sent before the next
    step (0.0 when no answer in that window was incomplete).
    """
    bounds = [*steps[1:], float("inf")]
    out = []
    for start, end in zip(steps, bounds, strict=True):
        dips = [s.sent for s in samples if start <= s.sent < end and (not s.ok or s.coverage < 1)]
        out.append(round(max(dips) - start, 2) if dips else 0.0)
    return out
