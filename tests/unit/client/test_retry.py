"""The retry loop's decisions without I/O: which errors are retried, how long it waits,
and how attempts and the per-call deadline bound it (a fake clock, a fixed jitter)."""

from __future__ import annotations

import pytest

from simsearch.client.errors import (
    ApiError,
    BadRequest,
    ClientError,
    ConnectionFailed,
    NotFound,
    RateLimited,
    ServerError,
    TimedOut,
    Unauthorized,
    Unavailable,
    retry_after,
)
from simsearch.client.retry import Attempts, RetryPolicy, retryable


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def attempts(policy: RetryPolicy, deadline_s: float = 60.0, jitter: float = 1.0) -> Attempts:
    return Attempts(policy, deadline_s, clock=Clock(), rng=lambda: jitter)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (Unavailable(503, "unavailable", "no shard"), True),
        (ServerError(502, "upstream_error", "bad gateway"), True),
        (RateLimited(429, "rate_limited", "slow down", retry_after_s=1), True),
        (ConnectionFailed("refused"), True),
        (TimedOut("read timeout"), True),
        (ServerError(500, "internal_error", "a bug"), False),
        (BadRequest(400, "invalid_parameter", "k"), False),
        (Unauthorized(401, "unauthorized", "key"), False),
        (NotFound(404, "not_found", "id"), False),
        (ApiError(409, "http_409", "conflict"), False),
    ],
)
def test_only_503_502_429_and_no_answer_are_retried(error: ClientError, expected: bool) -> None:
    assert retryable(error) is expected


def test_backoff_doubles_up_to_the_cap_with_equal_jitter() -> None:
    policy = RetryPolicy(backoff_s=0.2, max_backoff_s=1.0)
    assert [policy.backoff(n, lambda: 1.0) for n in (1, 2, 3, 4)] == [0.2, 0.4, 0.8, 1.0]
    assert policy.backoff(2, lambda: 0.0) == pytest.approx(0.2)  # never below half


def test_a_429_waits_its_retry_after_capped_plus_a_little_jitter() -> None:
    policy = RetryPolicy(max_retry_after_s=5.0)
    limited = RateLimited(429, "rate_limited", "over", retry_after_s=2.0)
    assert policy.wait_for(limited, 1, lambda: 0.0) == 2.0
    assert policy.wait_for(limited, 1, lambda: 1.0) == pytest.approx(2.2)
    far = RateLimited(429, "rate_limited", "over", retry_after_s=3600.0)
    assert policy.wait_for(far, 1, lambda: 0.0) == 5.0
    no_header = RateLimited(429, "rate_limited", "over")
    assert policy.wait_for(no_header, 1, lambda: 1.0) == policy.backoff(1, lambda: 1.0)


def test_attempts_are_bounded_by_count() -> None:
    loop = attempts(RetryPolicy(attempts=3, backoff_s=0.1))
    error = Unavailable(503, "unavailable", "no shard")
    waits = []
    for _ in range(2):
        loop.start()
        waits.append(loop.wait_after(error))
    loop.start()
    with pytest.raises(Unavailable):
        loop.wait_after(error)
    assert waits == [0.1, 0.2]


def test_a_wait_past_the_deadline_raises_the_last_error_instead() -> None:
    loop = attempts(RetryPolicy(attempts=10, max_retry_after_s=30), deadline_s=5.0, jitter=0.0)
    loop.start()
    with pytest.raises(RateLimited):
        loop.wait_after(RateLimited(429, "rate_limited", "over", retry_after_s=6.0))


def test_no_attempt_starts_after_the_deadline() -> None:
    loop = attempts(RetryPolicy(), deadline_s=2.0)
    assert loop.start() == 2.0
    loop.clock.now += 2.5  # type: ignore[attr-defined]
    with pytest.raises(TimedOut, match="deadline of 2s"):
        loop.start()


def test_a_wait_that_oversleeps_the_deadline_raises_the_last_error() -> None:
    """A busy machine's sleep may end past the deadline: the server's 503 says more than
    "the deadline ran out" (seen as a flaky test_the_deadline_bounds_the_retries)."""
    loop = attempts(RetryPolicy(attempts=10, backoff_s=0.5), deadline_s=2.0, jitter=1.0)
    loop.start()
    assert loop.wait_after(Unavailable(503, "unavailable", "no shard")) == 0.5
    loop.clock.now += 2.5  # type: ignore[attr-defined]  # slept 0.5 s, woke 2 s late
    with pytest.raises(Unavailable):
        loop.start()


def test_errors_that_are_not_retried_are_raised_at_once() -> None:
    loop = attempts(RetryPolicy(attempts=5))
    loop.start()
    with pytest.raises(BadRequest):
        loop.wait_after(BadRequest(400, "invalid_parameter", "k"))


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after("3") == 3.0
    assert retry_after(None) is None and retry_after("soon") is None
    assert retry_after("Thu, 01 Jan 1970 00:01:40 GMT", now=90.0) == pytest.approx(10.0)


@pytest.mark.parametrize("bad", [{"attempts": 0}, {"backoff_s": -1.0}])
def test_a_bad_policy_is_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="RetryPolicy"):
        RetryPolicy(**bad)  # type: ignore[arg-type]
