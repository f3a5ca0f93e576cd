"""Rate limits of the router: a token bucket with a burst per route class, per key and address.

A limit `RATE/UNIT:BURST` (e.g. `200/s:400`, `10/m:5`) lets `BURST` requests through at
once and then `RATE` per `UNIT` steadily; `off` turns one limit off. Each (route class,
target) pair — target `address` (the client address, see `router/clientip.py`) or `key`
(the API key) — has its own buckets, one per identity.

The bucket is GCRA (the "generic cell rate algorithm"), an exact token bucket kept as one
float per identity: the theoretical arrival time `tat` of the next request. A request at
`now` passes when `max(tat, now) - now <= (burst - 1) / rate`, and moves `tat` on by
`1 / rate`; otherwise it waits the difference. That is O(1) time and memory per check with
no lock (the router is one event loop), about a microsecond.

Why not the `limits` library: it has fixed-window, moving-window and sliding-window-counter
strategies but no token bucket. A moving window "N per T" allows N at once and then
nothing until the window slides, not "burst B then R per second"; two stacked windows only
approximate that, the moving window stores one timestamp per request (memory grows with
the limit), and its async strategies add an await and a lock to every check of the
sub-millisecond `/search/vector` path. The contract here is small enough to own.

Limits are per router replica (in memory): with N replicas behind a Service a client may
get up to N times a limit, as the load balancer spreads it. The chart documents that.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, get_args

from simsearch.common.errors import RateLimited

__all__ = [
    "ROUTE_CLASSES",
    "Limit",
    "RateLimiter",
    "RouteClass",
    "Target",
    "TokenBuckets",
]

RouteClass = Literal["vector_search", "image_search", "images", "admin"]
ROUTE_CLASSES: tuple[RouteClass, ...] = get_args(RouteClass)
Target = Literal["address", "key"]

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_SPEC = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*([smh])\s*(?::\s*(\d+)\s*)?$")
_WHAT: dict[RouteClass, str] = {
    "vector_search": "vector searches",
    "image_search": "image searches",
    "images": "image downloads",
    "admin": "admin calls",
}
# Float slack (s): `tat` is a sum of many 1/rate steps and must not refuse a request that is
# exactly on time because of rounding.
_SLACK_S = 1e-6
# Seconds between sweeps of buckets that are full again (they hold no information).
SWEEP_EVERY_S = 10.0


@dataclass(frozen=True)
class Limit:
    """`rate` requests per second after a burst of `burst`; `text` as it was configured."""

    rate: float
    burst: int
    text: str

    @classmethod
    def parse(cls, text: str) -> Limit | None:
        """`RATE/UNIT[:BURST]` (unit s, m or h), or `off` (None). BURST defaults to the
        count of one unit, at least 1: `30/m` lets 30 through at once, then one per 2 s."""
        if text.strip().lower() in ("off", "none", "0"):
            return None
        match = _SPEC.match(text)
        if match is None:
            raise ValueError(
                f"{text!r} is not a rate limit: use RATE/UNIT[:BURST] with unit s, m or h "
                "(e.g. 200/s:400 or 10/m), or off"
            )
        count, unit, burst_text = match.groups()
        rate = float(count) / _UNITS[unit]
        burst = int(burst_text) if burst_text else max(1, math.ceil(float(count)))
        if rate <= 0 or burst < 1:
            raise ValueError(f"{text!r}: the rate and the burst must be at least 1")
        return cls(rate, burst, text.strip())


class TokenBuckets:
    """One limit's buckets, by identity (GCRA, see the module docstring).

    Memory is bounded: buckets that are full again are dropped every `SWEEP_EVERY_S`, and
    when more than `max_tracked` identities are held at once the oldest half is dropped
    too (those clients get a full bucket back: a flood of distinct addresses cannot grow
    the router's memory without limit, at the price of forgetting some of them).
    """

    def __init__(self, limit: Limit, max_tracked: int = 100_000) -> None:
        self.limit = limit
        self.interval = 1.0 / limit.rate
        self.tolerance = (limit.burst - 1) * self.interval
        self.max_tracked = max_tracked
        self._tat: dict[str, float] = {}
        self._next_sweep = 0.0

    def __len__(self) -> int:
        return len(self._tat)

    def take(self, identity: str, now: float) -> float:
        """Take one token: 0.0 if it was there, else the seconds until one will be."""
        if now >= self._next_sweep or len(self._tat) > self.max_tracked:
            self._sweep(now)
        tat = self._tat.get(identity, now)
        if tat < now:
            tat = now
        wait = tat - now - self.tolerance
        if wait > _SLACK_S:
            return wait
        self._tat[identity] = tat + self.interval
        return 0.0

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + SWEEP_EVERY_S
        self._tat = {k: t for k, t in self._tat.items() if t > now}
        if len(self._tat) > self.max_tracked:
            keep = list(self._tat.items())[len(self._tat) // 2 :]
            self._tat = dict(keep)


class RateLimiter:
    """Every configured limit; `check` raises `RateLimited` (429 + Retry-After) when over.

    `on_limited(route_class, target)` is called for each refusal (the router counts them
    in `simsearch_router_rate_limited_total`).
    """

    def __init__(
        self,
        limits: Mapping[tuple[RouteClass, Target], Limit | None],
        max_tracked: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        on_limited: Callable[[RouteClass, Target], None] | None = None,
    ) -> None:
        self.buckets = {
            where: TokenBuckets(limit, max_tracked)
            for where, limit in limits.items()
            if limit is not None
        }
        self.clock = clock
        self.on_limited = on_limited

    def check(self, route_class: RouteClass, target: Target, identity: str) -> None:
        """Count one request of `identity` against its limit (if that limit is on)."""
        buckets = self.buckets.get((route_class, target))
        if buckets is None:
            return
        wait = buckets.take(identity, self.clock())
        if wait <= 0:
            return
        if self.on_limited is not None:
            self.on_limited(route_class, target)
        limit = buckets.limit
        retry = max(1, math.ceil(wait))
        who = "client address" if target == "address" else "API key"
        raise RateLimited(
            f"too many {_WHAT[route_class]} for this {who}: the limit is {limit.text} "
            f"(rate/unit:burst) per {who} on each router replica; retry in {retry} s",
            retry,
        )
