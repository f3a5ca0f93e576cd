"""Rate limits: the limit syntax, the token bucket's burst and refill, memory bounds, the
client address behind trusted proxies, and the settings' checks."""

from __future__ import annotations

import pytest

from simsearch.common.errors import ConfigError, RateLimited
from simsearch.common.http import headers_for, status_for
from simsearch.common.settings import load_settings
from simsearch.router.clientip import TrustedProxies, bucket_of, is_loopback
from simsearch.router.ratelimit import Limit, RateLimiter, TokenBuckets
from simsearch.router.settings import RouterSettings


def test_limit_syntax() -> None:
    assert Limit.parse("200/s:400") == Limit(200.0, 400, "200/s:400")
    assert Limit.parse("30/m") == Limit(0.5, 30, "30/m")  # burst: one unit's count
    assert Limit.parse(" 1 / h : 2 ") == Limit(1 / 3600, 2, "1 / h : 2")
    assert Limit.parse("0.5/s") == Limit(0.5, 1, "0.5/s")
    assert Limit.parse("off") is None
    for bad in ("200", "200/d", "fast", "-1/s", "10/s:0", "10/s:x"):
        with pytest.raises(ValueError):
            Limit.parse(bad)


def test_a_bucket_lets_the_burst_through_then_refills_at_the_rate() -> None:
    buckets = TokenBuckets(Limit(2.0, 3, "2/s:3"))  # a token every 0.5 s, 3 at most
    now = 1000.0
    assert [buckets.take("a", now) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a", now) == pytest.approx(0.5)
    assert buckets.take("b", now) == 0.0  # every identity has its own bucket
    assert buckets.take("a", now + 0.49) > 0
    assert buckets.take("a", now + 0.5) == 0.0  # one token back after 1/rate
    assert buckets.take("a", now + 0.5) > 0
    assert [buckets.take("a", now + 10) for _ in range(4)][:3] == [0.0, 0.0, 0.0]  # full again


def test_steady_traffic_at_the_rate_is_never_refused() -> None:
    buckets = TokenBuckets(Limit(100.0, 1, "100/s:1"))
    assert all(buckets.take("a", 5.0 + i / 100) == 0.0 for i in range(1000))


def test_full_buckets_are_forgotten_and_memory_is_bounded() -> None:
    buckets = TokenBuckets(Limit(1.0, 5, "1/s:5"), max_tracked=100)
    for i in range(50):
        buckets.take(f"10.0.0.{i}", 0.0)
    assert len(buckets) == 50
    buckets.take("late", 20.0)  # a sweep: the 50 are full again (their tat has passed)
    assert len(buckets) == 1
    for i in range(1000):
        buckets.take(f"flood-{i}", 21.0)
    assert len(buckets) <= 101


def test_the_limiter_raises_429_with_retry_after_and_counts() -> None:
    refused: list[tuple[str, str]] = []
    clock = [50.0]
    limiter = RateLimiter(
        {("admin", "address"): Limit(1 / 60, 2, "1/m:2"), ("admin", "key"): None},
        clock=lambda: clock[0],
        on_limited=lambda c, t: refused.append((c, t)),
    )
    limiter.check("admin", "address", "1.2.3.4")
    limiter.check("admin", "address", "1.2.3.4")
    with pytest.raises(RateLimited) as err:
        limiter.check("admin", "address", "1.2.3.4")
    assert status_for(err.value) == 429 and err.value.retry_after_s == 60
    assert headers_for(err.value) == {"Retry-After": "60"}
    assert "admin calls" in err.value.reason and "1/m:2" in err.value.reason
    assert refused == [("admin", "address")]
    clock[0] += 59.6
    with pytest.raises(RateLimited) as err:
        limiter.check("admin", "address", "1.2.3.4")
    assert err.value.retry_after_s == 1  # 0.4 s left: rounded up, never 0
    for _ in range(10):
        limiter.check("admin", "key", "k")  # off: never limited
        limiter.check("images", "address", "1.2.3.4")  # not configured


PROXIES = TrustedProxies.parse("10.0.0.0/8, 192.0.2.1, fd00::/8")


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("198.51.100.7", "203.0.113.9", "198.51.100.7"),  # untrusted peer: header ignored
        ("10.1.2.3", "203.0.113.9", "203.0.113.9"),
        ("10.1.2.3", "1.1.1.1, 203.0.113.9, 10.9.9.9", "203.0.113.9"),  # right-most untrusted
        ("10.1.2.3", "10.2.2.2, 10.3.3.3", "10.2.2.2"),  # all trusted: the left-most
        ("10.1.2.3", None, "10.1.2.3"),
        ("192.0.2.1", "[2001:db8::1]:443", "[2001:db8::1]:443"),
        ("fd00::5", "garbage", "garbage"),  # what the trusted proxy wrote, as it is
        ("::ffff:10.0.0.1", "203.0.113.9", "203.0.113.9"),  # IPv4-mapped peer
        (None, "203.0.113.9", "unknown"),
    ],
)
def test_client_address_behind_trusted_proxies(
    peer: str | None, forwarded: str | None, client: str
) -> None:
    assert PROXIES.client_address(peer, forwarded) == client


def test_no_trusted_proxies_means_the_peer_is_the_client() -> None:
    assert TrustedProxies.parse("").client_address("10.1.2.3", "203.0.113.9") == "10.1.2.3"
    with pytest.raises(ValueError, match="not a CIDR"):
        TrustedProxies.parse("10.0.0.0/8,intranet")


def test_ipv6_clients_share_a_bucket_per_64_and_loopback() -> None:
    assert bucket_of("2001:db8:1:2:aaaa::1") == bucket_of("2001:db8:1:2:bbbb::9")
    assert bucket_of("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert bucket_of("2001:db8:1:3::1") != bucket_of("2001:db8:1:2::1")
    assert bucket_of("203.0.113.9") == "203.0.113.9"
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("127.5.0.1")
    assert not is_loopback("10.0.0.1") and not is_loopback("unknown")


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"rate_vector_search_per_address": "lots"}, "SIMSEARCH_RATE_VECTOR_SEARCH_PER_ADDRESS"),
        ({"rate_admin_per_key": "5/d"}, "SIMSEARCH_RATE_ADMIN_PER_KEY"),
        ({"trusted_proxies": "10.0.0.0/33"}, "SIMSEARCH_TRUSTED_PROXIES"),
        ({"rate_max_tracked": "5"}, "SIMSEARCH_RATE_MAX_TRACKED"),
    ],
)
def test_bad_limit_settings_fail_at_start_naming_the_variable(
    settings: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(RouterSettings, shards="http://s:1", **settings)
    assert named in err.value.reason


def test_the_settings_table_has_every_class_and_target() -> None:
    settings = load_settings(RouterSettings, shards="http://s:1", rate_images_per_key="off")
    table = settings.rate_limit_table()
    assert len(table) == 8 and table[("images", "key")] is None
    assert table[("vector_search", "address")] == Limit(200.0, 400, "200/s:400")
    assert not settings.rate_limits  # off unless turned on (the chart turns them on)
