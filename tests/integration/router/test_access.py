"""API key scopes, key rotation, rate limits and X-Forwarded-For against real processes.

Routers run without a live shard (one dead static URL; ready means live here): a request
that passes the key and the limits answers 503 (no shard), which is how "admitted" is
told from 401/403/429. The shard tests run a real shard on an empty store (it is alive,
not ready) for its `/admin/reload`, alone and behind a router that forwards its key.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.keyfiles import swap_secret_volume
from tests.support.procs import Service, start_service, wait_for
from tests.support.s3server import free_port

pytestmark = pytest.mark.integration

VECTOR = {"vector": [1.0, 0.0]}
ADMITTED = 503  # past the key and the limits: no shard answers


def dead_shard_env() -> dict[str, str]:
    return {
        "SIMSEARCH_SHARDS": f"http://127.0.0.1:{free_port()}",
        "SIMSEARCH_POLL_S": "60",
        "SIMSEARCH_INFO_TIMEOUT_S": "0.5",
        "SIMSEARCH_LOG_FORMAT": "text",
    }


def router(env: dict[str, str]) -> AbstractContextManager[Service]:
    """A router process with `env` in front of one dead shard URL, waited for until live."""
    return start_service("router", {**dead_shard_env(), **env}, "/health/live", 30)


def post(
    service: Service, path: str, key: str | None = None, client: httpx.Client | None = None,
    **headers: str,
) -> httpx.Response:  # fmt: skip
    sent = {k.replace("_", "-"): v for k, v in headers.items()}
    if key is not None:
        sent["X-API-Key"] = key
    body = VECTOR if path == "/search/vector" else None
    url = f"{service.url}{path}"
    if client is not None:
        return client.post(url, json=body, headers=sent, params={"timeout_s": 1})
    return httpx.post(url, json=body, headers=sent, params={"timeout_s": 1}, timeout=10)


def metric(service: Service, name: str, **labels: str) -> float:
    text = httpx.get(f"{service.url}/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


# ------------------------------------------------------------------ keys and scopes


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    keys = swap_secret_volume(
        tmp_path_factory.mktemp("keys") / "volume", "search:file-search\nadmin:file-admin\n", 1
    )
    env = {
        "SIMSEARCH_API_KEYS": "env-search",
        "SIMSEARCH_ADMIN_KEYS": "env-admin",
        "SIMSEARCH_API_KEYS_FILE": str(keys),
    }
    with router(env) as service:
        yield service


@pytest.mark.parametrize(
    ("path", "key", "status", "code"),
    [
        ("/search/vector", None, 401, "unauthorized"),
        ("/search/vector", "wrong", 401, "unauthorized"),
        ("/search/vector", "env-search", ADMITTED, "unavailable"),
        ("/search/vector", "file-search", ADMITTED, "unavailable"),
        ("/search/vector", "file-admin", ADMITTED, "unavailable"),  # an admin key may search
        ("/admin/reload", None, 401, "unauthorized"),
        ("/admin/reload", "wrong", 401, "unauthorized"),
        ("/admin/reload", "env-search", 403, "forbidden"),
        ("/admin/reload", "file-search", 403, "forbidden"),
    ],
)
def test_key_scopes(keyed: Service, path: str, key: str | None, status: int, code: str) -> None:
    response = post(keyed, path, key)
    assert response.status_code == status, response.text
    assert response.json()["error"] == code and response.json()["request_id"]


def test_an_admin_key_may_reload(keyed: Service) -> None:
    for key in ("env-admin", "file-admin"):
        response = post(keyed, "/admin/reload", key)
        assert response.status_code == 200, response.text
        ((_, outcome),) = response.json()["shards"].items()
        assert "unreachable" in outcome["error"]  # the dead shard, reported


def test_a_rotated_key_file_is_used_without_a_restart(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    keys = swap_secret_volume(volume, "search:old-key\nadmin:old-admin\n", 1)
    with router({"SIMSEARCH_API_KEYS_FILE": str(keys)}) as service:
        assert post(service, "/search/vector", "old-key").status_code == ADMITTED
        assert post(service, "/search/vector", "new-key").status_code == 401
        swap_secret_volume(volume, "search:new-key\nadmin:new-admin\n", 2)  # the kubelet's way
        wait_for(
            lambda: post(service, "/search/vector", "new-key").status_code == ADMITTED,
            10,
            "the new key accepted",
        )
        assert post(service, "/search/vector", "old-key").status_code == 401
        assert post(service, "/admin/reload", "old-admin").status_code == 401
        assert post(service, "/admin/reload", "new-admin").status_code == 200
        assert post(service, "/admin/reload", "new-key").status_code == 403
        assert service.process.poll() is None  # the same process throughout


# ------------------------------------------------------------------ rate limits


@pytest.fixture(scope="module")
def limited() -> Iterator[Service]:
    env = {
        "SIMSEARCH_API_KEYS": ",".join(f"key-{i}" for i in range(6)),
        "SIMSEARCH_RATE_LIMITS": "true",
        "SIMSEARCH_RATE_VECTOR_SEARCH_PER_ADDRESS": "1/m:3",
        "SIMSEARCH_RATE_VECTOR_SEARCH_PER_KEY": "1/m:5",
        "SIMSEARCH_TRUSTED_PROXIES": "127.0.0.1/32",
    }
    with router(env) as service:
        yield service


def test_a_burst_over_the_address_limit_is_429_with_retry_after(limited: Service) -> None:
    before = metric(
        limited,
        "simsearch_router_rate_limited_total",
        route_class="vector_search",
        limited_by="address",
    )
    proxied = "198.51.100.1"  # via a proxy on 127.0.0.1: a trusted one
    codes = [
        post(limited, "/search/vector", "key-0", X_Forwarded_For=proxied).status_code
        for _ in range(3)
    ]
    assert codes == [ADMITTED] * 3
    refused = post(limited, "/search/vector", "key-0", X_Forwarded_For=proxied)
    assert refused.status_code == 429, refused.text
    assert refused.headers["retry-after"].isdigit() and int(refused.headers["retry-after"]) >= 1
    body = refused.json()
    assert body["status"] == "error" and body["error"] == "rate_limited"
    assert "client address" in body["detail"] and "1/m:3" in body["detail"]
    assert body["request_id"] == refused.headers["x-request-id"]
    after = metric(
        limited,
        "simsearch_router_rate_limited_total",
        route_class="vector_search",
        limited_by="address",
    )
    assert after == before + 1
    other_client = post(limited, "/search/vector", "key-1", X_Forwarded_For="198.51.100.2")
    assert other_client.status_code == ADMITTED  # its own bucket: the header was believed


def test_forwarded_for_from_an_untrusted_peer_is_ignored(limited: Service) -> None:
    """From 127.0.0.2 (not in SIMSEARCH_TRUSTED_PROXIES) every request counts against the
    peer, whatever address it claims to forward for."""
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(transport=transport, timeout=10) as client:
        codes = [
            post(
                limited, "/search/vector", "key-2", client, X_Forwarded_For=f"203.0.113.{i}"
            ).status_code
            for i in range(4)
        ]
    assert codes == [ADMITTED] * 3 + [429]


def test_the_per_key_limit_follows_the_key_across_addresses(limited: Service) -> None:
    codes = [
        post(limited, "/search/vector", "key-3", X_Forwarded_For=f"192.0.2.{i}").status_code
        for i in range(6)
    ]
    assert codes == [ADMITTED] * 5 + [429]
    refused = post(limited, "/search/vector", "key-3", X_Forwarded_For="192.0.2.99")
    assert "API key" in refused.json()["detail"]
    assert metric(
        limited, "simsearch_router_rate_limited_total", route_class="vector_search",
        limited_by="key",
    ) >= 2  # fmt: skip
    fresh = post(limited, "/search/vector", "key-4", X_Forwarded_For="192.0.2.100")
    assert fresh.status_code == ADMITTED


# ------------------------------------------------------------------ shard admin


@pytest.fixture(scope="module")
def shard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("empty-store")
    env = {
        "SIMSEARCH_STORE": (root / "store").as_uri(),
        "SIMSEARCH_SHARD_ORDINAL": "0",
        "SIMSEARCH_CACHE_DIR": str(root / "cache"),
        "SIMSEARCH_ADMIN_KEYS": "shard-admin",
        "SIMSEARCH_LOG_FORMAT": "text",
    }
    with start_service("shard", env, "/health/live", 60) as service:
        yield service


def test_shard_reload_needs_an_admin_key(shard: Service) -> None:
    url = f"{shard.url}/admin/reload"
    missing = httpx.post(url, params={"timeout_s": 0})
    assert missing.status_code == 401 and missing.json()["error"] == "unauthorized"
    wrong = httpx.post(url, params={"timeout_s": 0}, headers={"X-API-Key": "nope"})
    assert wrong.status_code == 401
    ok = httpx.post(url, params={"timeout_s": 0}, headers={"X-API-Key": "shard-admin"})
    assert ok.status_code in (200, 202), ok.text
    assert httpx.get(f"{shard.url}/info").status_code == 200  # the router's routes stay open


def test_the_router_forwards_the_admin_key_to_the_shards(shard: Service) -> None:
    env = {"SIMSEARCH_SHARDS": shard.url, "SIMSEARCH_ADMIN_KEYS": "shard-admin,router-only"}
    with router(env) as service:
        shared = post(service, "/admin/reload", "shard-admin").json()["shards"][shard.url]
        assert shared["status"] in (200, 202), shared  # polled (the store is empty: no version)
        unknown = post(service, "/admin/reload", "router-only").json()["shards"][shard.url]
        assert unknown["status"] == 401 and "not valid" in unknown["error"]
