"""When a failed call is tried again, and after how long: the loop's decisions, without I/O.

Retried: 503 (`Unavailable`: no shard or embedder *now*), 502 (`ServerError` with status
502: a bad answer from behind the router), connection failures and timeouts
(`ConnectionFailed`), each after an exponential backoff with jitter; and 429
(`RateLimited`) after the server's Retry-After (capped at `max_retry_after_s`, a little
jitter added so that clients refused together do not come back together). Never retried:
any other 4xx (the same request would be refused again) and other 5xx (500 is a bug).

Retrying is safe for every route the client calls: the searches are POSTs only because a
vector or an image does not fit a URL, they change nothing; `POST /admin/reload` asks the
shards to poll `CURRENT`, and asking twice does what asking once does. Each call is
bounded twice: by `attempts` and by its deadline (`Timeouts.deadline_s`); a wait that
would end past the deadline is not started, the last error is raised instead.

`Attempts` is one call's loop state. The sync and async clients run the same loop around
it and differ only in how they send and sleep.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from simsearch.client.errors import (
    ClientError,
    ConnectionFailed,
    RateLimited,
    ServerError,
    TimedOut,
    Unavailable,
)

__all__ = ["Attempts", "RetryPolicy", "retryable"]


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` tries in all (1 = never retry); waits in seconds.

    Backoff before retry n (n = 1, 2, ...) is `min(max_backoff_s, backoff_s · 2^(n-1))`,
    jittered to between half and all of it ("equal jitter": never a zero wait).
    """

    attempts: int = 4
    backoff_s: float = 0.2
    max_backoff_s: float = 5.0
    max_retry_after_s: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be >= 1, got {self.attempts}")
        for name in ("backoff_s", "max_backoff_s", "max_retry_after_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"RetryPolicy.{name} must be >= 0, got {getattr(self, name)}")

    def backoff(self, retry: int, rng: Callable[[], float] = random.random) -> float:
        """The jittered wait before retry number `retry` (1-based)."""
        ceiling = min(self.max_backoff_s, self.backoff_s * 2.0 ** (retry - 1))
        return ceiling * (0.5 + rng() / 2)

    def wait_for(self, error: ClientError, retry: int, rng: Callable[[], float]) -> float:
        """The wait before retrying after `error`: Retry-After (capped) for a 429."""
        if isinstance(error, RateLimited) and error.retry_after_s is not None:
            base = min(error.retry_after_s, self.max_retry_after_s)
            return base + min(1.0, base * 0.1) * rng()
        return self.backoff(retry, rng)


def retryable(error: ClientError) -> bool:
    """503, 502, 429 and no answer at all: worth another try; the rest is not."""
    if isinstance(error, Unavailable | RateLimited | ConnectionFailed):
        return True
    return isinstance(error, ServerError) and error.status == 502


@dataclass
class Attempts:
    """One call's attempts: how much deadline is left, and whether and when to go again."""

    policy: RetryPolicy
    deadline_s: float
    clock: Callable[[], float] = time.monotonic
    rng: Callable[[], float] = random.random
    made: int = 0
    _ends: float = field(init=False)
    _last: ClientError | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self._ends = self.clock() + self.deadline_s

    def remaining(self) -> float:
        """Seconds of the deadline left; once none is, the last attempt's error (a wait
        that overslept the deadline on a busy machine), else `TimedOut`."""
        left = self._ends - self.clock()
        if left <= 0:
            if self._last is not None:
                raise self._last
            raise TimedOut(f"the call's deadline of {self.deadline_s:g}s ran out")
        return left

    def start(self) -> float:
        """Count an attempt about to be sent; the seconds it may take."""
        left = self.remaining()
        self.made += 1
        return left

    def wait_after(self, error: ClientError) -> float:
        """Seconds to wait before the next attempt; re-raises `error` when there is none."""
        self._last = error
        if not retryable(error) or self.made >= self.policy.attempts:
            raise error
        wait = self.policy.wait_for(error, self.made, self.rng)
        if wait >= self._ends - self.clock():
            raise error
        return wait
