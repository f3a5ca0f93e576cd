"""The router app in-process with no shard answering: every route says why, none is a 500.

Driven through httpx's ASGI transport with the app's lifespan entered by hand (the
transport does not run it), so discovery really polls the dead shard URL. The reload
fan-out is also tested against fake shards (`Upstream._request` replaced) to inject
slow, failing and garbled answers.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from threadpoolctl import threadpool_info, threadpool_limits

from simsearch.common.errors import UpstreamFailure
from simsearch.common.settings import load_settings
from simsearch.common.wire import ShardInfo, ShardReload, ShardVersionInfo
from simsearch.router.app import create_app
from simsearch.router.registry import ShardRegistry
from simsearch.router.settings import RouterSettings
from simsearch.router.source import StaticSource
from simsearch.router.transport import Reply, Upstream
from tests.support.s3server import free_port

Scenario = Callable[[httpx.AsyncClient], Awaitable[None]]


def run(
    scenario: Scenario,
    api_keys: str | None = None,
    peer: tuple[str, int] = ("127.0.0.1", 123),
    **settings_given: Any,
) -> None:
    """Start the app (lifespan included) with one dead shard URL and run `scenario`, the
    requests coming from `peer` (the peer address the app sees)."""
    dead = f"http://127.0.0.1:{free_port()}"  # nobody listens: connection refused
    settings = load_settings(
        RouterSettings,
        shards=dead,
        poll_s=60,
        info_timeout_s=0.5,
        api_keys=api_keys,
        **settings_given,
    )
    app = create_app(settings)

    async def go() -> None:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=peer)
            async with httpx.AsyncClient(transport=transport, base_url="http://router") as client:
                await scenario(client)

    asyncio.run(go())


def test_openapi_lists_the_public_routes() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        paths = (await client.get("/openapi.json")).json()["paths"]
        for route in ("/search/vector", "/search/image", "/search/similar/{id}", "/images/{id}"):
            assert route in paths
        assert "post" in paths["/admin/reload"]
        assert {"/health", "/stats", "/health/live", "/health/ready", "/metrics"} <= set(paths)
        assert {"/collections", "/collections/{name}"} <= set(paths)
        for route in ("search/vector", "search/image", "search/similar/{id}", "images/{id}"):
            assert f"/collections/{{name}}/{route}" in paths

    run(scenario)


def test_filter_strings_that_are_not_filters_are_400_before_any_shard_is_asked() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        similar = await client.get("/search/similar/1", params={"filter": "{nope"})
        assert similar.status_code == 400, similar.text
        assert similar.json()["error"] == "invalid_filter"
        assert "query parameter 'filter'" in similar.json()["detail"]
        files = {"file": ("q.jpg", b"\xff\xd8", "image/jpeg")}
        image = await client.post("/search/image", files=files, data={"filter": '{"eq": 1}'})
        assert image.status_code == 400, image.text
        assert "form field 'filter'" in image.json()["detail"]
        named = await client.get("/collections/cats/search/similar/1", params={"filter": "[]"})
        assert named.status_code == 400 and named.json()["error"] == "invalid_filter"

    run(scenario)


def test_collections_with_no_shard_up() -> None:
    """Nothing is listed; a collection's routes answer 503 (nobody can tell it exists)."""

    async def scenario(client: httpx.AsyncClient) -> None:
        listing = await client.get("/collections")
        assert listing.json() == {"default": "default", "collections": []}
        assert (await client.get("/collections/cats")).status_code == 503
        searched = await client.post("/collections/cats/search/vector", json={"vector": [1.0]})
        assert searched.status_code == 503, searched.text
        assert "collection 'cats'" in searched.json()["detail"]

    run(scenario)


def test_every_schema_reference_of_the_document_resolves() -> None:
    """The vector body is declared by hand; its filter's node models must be components
    (a `#/$defs/...` reference inside an operation would dangle)."""

    async def scenario(client: httpx.AsyncClient) -> None:
        document = (await client.get("/openapi.json")).json()
        refs = set(re.findall(r'"\$ref": "([^"]+)"', json.dumps(document)))
        schemas = document["components"]["schemas"]
        assert "#/components/schemas/Eq" in refs and "Not" in schemas
        assert {r for r in refs if r.removeprefix("#/components/schemas/") not in schemas} == set()

    run(scenario)


def test_without_shards_searches_are_503_with_the_reason() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        response = await client.post("/search/vector", json={"vector": [1.0, 0.0]})
        assert response.status_code == 503
        body = response.json()
        assert body["error"] == "unavailable"
        assert "no shard serves any index version" in body["detail"]
        assert "down: http://127.0.0.1" in body["detail"]
        assert (await client.get("/search/similar/12")).status_code == 503
        assert (await client.get("/images/12")).status_code == 503

    run(scenario)


def test_without_shards_health_is_unhealthy_and_not_ready() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        health = await client.get("/health")
        assert health.status_code == 503
        assert health.json()["status"] == "unhealthy" and health.json()["shards"]["down"] == 1
        assert (await client.get("/health/ready")).status_code == 503
        assert (await client.get("/health/live")).status_code == 200
        stats = (await client.get("/stats")).json()
        assert stats["total_vectors"] == 0 and stats["shards"][0]["state"] == "down"
        assert "simsearch_router_shards_down 1.0" in (await client.get("/metrics")).text

    run(scenario)


def test_image_search_refuses_non_multipart_and_needs_an_embedder() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        assert (await client.post("/search/image", json={})).status_code == 415
        files = {"file": ("a.jpg", b"\xff\xd8\xff", "image/jpeg")}
        response = await client.post("/search/image", files=files)
        assert response.status_code == 503  # no index and no embedder: nothing to do

    run(scenario)


def test_api_keys_guard_searches_and_images_but_not_health() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        vector = {"vector": [1.0, 0.0]}
        missing = await client.post("/search/vector", json=vector)
        assert missing.status_code == 401
        assert missing.json()["error"] == "unauthorized"
        assert "X-API-Key" in missing.json()["detail"]
        wrong = await client.post("/search/vector", json=vector, headers={"X-API-Key": "nope"})
        assert wrong.status_code == 401 and "not valid" in wrong.json()["detail"]
        in_url = await client.post("/search/vector?api_key=k2", json=vector)
        assert in_url.status_code == 401  # a key in the URL is never accepted
        for headers in ({"X-API-Key": "k2"}, {"Authorization": "Bearer k1"}):
            ok = await client.post("/search/vector", json=vector, headers=headers)
            assert ok.status_code == 503  # past the key check: no shard answers
        assert (await client.get("/images/12")).status_code == 401
        assert (await client.get("/search/similar/12")).status_code == 401
        for open_path in ("/health", "/health/live", "/metrics", "/", "/stats"):
            assert (await client.get(open_path)).status_code != 401, open_path

    run(scenario, api_keys="k1, k2")


# ------------------------------------------------------------------ /admin/reload


def test_admin_reload_reports_a_dead_shard_instead_of_failing() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        response = await client.post("/admin/reload", params={"timeout_s": 1})
        assert response.status_code == 200
        ((url, outcome),) = response.json()["shards"].items()
        assert url.startswith("http://127.0.0.1:")
        assert outcome["status"] is None and "unreachable" in outcome["error"]
        assert (await client.post("/admin/reload", params={"timeout_s": -1})).status_code == 422

    run(scenario)


def test_admin_reload_needs_an_admin_key_when_keys_are_set() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        assert (await client.post("/admin/reload")).status_code == 401
        wrong = await client.post("/admin/reload", headers={"X-API-Key": "nope"})
        assert wrong.status_code == 401
        search_key = await client.post("/admin/reload", headers={"X-API-Key": "k1"})
        assert search_key.status_code == 403 and search_key.json()["error"] == "forbidden"
        assert "admin key" in search_key.json()["detail"]
        ok = await client.post(
            "/admin/reload", headers={"X-API-Key": "a1"}, params={"timeout_s": 1}
        )
        assert ok.status_code == 200 and len(ok.json()["shards"]) == 1
        admin_searches = await client.post(
            "/search/vector", json={"vector": [1.0, 0.0]}, headers={"X-API-Key": "a1"}
        )
        assert admin_searches.status_code == 503  # past the key check: no shard answers

    run(scenario, api_keys="k1", admin_keys="a1")


def test_without_keys_admin_answers_only_to_loopback_clients() -> None:
    async def from_outside(client: httpx.AsyncClient) -> None:
        refused = await client.post("/admin/reload", params={"timeout_s": 1})
        assert refused.status_code == 403 and "loopback" in refused.json()["detail"]
        assert "SIMSEARCH_ADMIN_KEYS" in refused.json()["detail"]
        searched = await client.post("/search/vector", json={"vector": [1.0, 0.0]})
        assert searched.status_code == 503  # search stays open without keys

    run(from_outside, peer=("203.0.113.7", 5000))


def test_image_search_checks_k_before_it_needs_an_embedder() -> None:
    """No shard and no embedder: a bad k is a 400 at once, before anything is embedded."""

    async def scenario(client: httpx.AsyncClient) -> None:
        files = {"file": ("a.jpg", b"\xff\xd8\xff", "image/jpeg")}
        for k in ("0", "1001"):
            response = await client.post("/search/image", params={"k": k}, files=files)
            assert response.status_code == 400, response.text
            assert "k must be between 1 and 1000" in response.json()["detail"]

    run(scenario)


def test_a_burst_over_the_limit_is_429_with_retry_after_and_counted() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        vector = {"vector": [1.0, 0.0]}
        codes = [(await client.post("/search/vector", json=vector)).status_code for _ in range(3)]
        assert codes == [503, 503, 503]  # the burst passes (to the dead shard)
        limited = await client.post("/search/vector", json=vector)
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        body = limited.json()
        assert body["error"] == "rate_limited" and "client address" in body["detail"]
        assert body["request_id"] == limited.headers["x-request-id"]
        similar = await client.get("/search/similar/5")
        assert similar.status_code == 429  # the same route class, the same bucket
        assert (await client.get("/images/5")).status_code == 503  # another class
        metrics = (await client.get("/metrics")).text
        line = (
            'simsearch_router_rate_limited_total{limited_by="address",route_class="vector_search"}'
        )
        assert f"{line} 2.0" in metrics

    run(scenario, rate_limits=True, rate_vector_search_per_address="1/m:3")


OLD = "v20250101T000000Z-aaaaaa"
NEW = "v20250102T000000Z-bbbbbb"
JSON = "application/json"


def shard_info(ordinal: int, live: str) -> bytes:
    """A shard holding OLD and NEW complete (one partition each) with `live` live."""
    versions = [
        ShardVersionInfo(
            version=v,
            partitions=1,
            ready=[0],
            dim=4,
            nprobe=1,
            refine=1,
            vectors=1,
            model="t",
            live=v == live,
        )
        for v in (OLD, NEW)
    ]
    info = ShardInfo(
        ordinal=ordinal,
        replicas=5,
        index="default",
        ready=True,
        versions=versions,
        rss_bytes=0,
        version="t",
    )
    return info.model_dump_json().encode()


def test_reload_all_asks_every_shard_at_once_then_refreshes_the_registry() -> None:
    """Five shards, each reload taking 0.3 s: done in well under 5 × 0.3 s, every outcome
    reported by URL, and the /info read afterwards already shows what the reload changed."""
    urls = [f"http://s{i}" for i in range(5)]
    reloaded: set[str] = set()
    calls: list[str] = []

    class FakeShards(Upstream):
        async def _request(self, method: str, url: str, timeout_s: float, **kw: Any) -> Reply:
            base, _, path = url.partition("/admin/reload")
            if not path:  # GET /info: after a reload, CURRENT is the rolled-back OLD
                base = url.removesuffix("/info")
                calls.append(f"info {base}")
                live = OLD if base in reloaded else NEW
                return Reply(200, shard_info(urls.index(base), live), JSON)
            calls.append(f"reload {base}")
            assert path == "?timeout_s=2.5" and timeout_s > 2.5
            await asyncio.sleep(0.3)
            reloaded.add(base)
            body = ShardReload(current=OLD, versions=[OLD, NEW], ready=True)
            if base == urls[0]:
                return Reply(200, body.model_dump_json().encode(), JSON)
            if base == urls[1]:
                return Reply(202, body.model_dump_json().encode(), JSON)
            if base == urls[2]:
                error = b'{"status": "error", "error": "x", "detail": "store unreachable"}'
                return Reply(503, error, JSON)
            if base == urls[3]:
                return Reply(200, b"<html>a proxy</html>", "text/html")
            raise UpstreamFailure(url, "unreachable (refused)", unreachable=True, timeout=False)

    async def go() -> None:
        registry = ShardRegistry(StaticSource(urls), FakeShards(None), 60, 1.0)
        await registry.poll_once()
        assert all(s.info and s.info.versions[1].live for s in registry.states.values())
        calls.clear()
        started = time.monotonic()
        results = await registry.reload_all(2.5)
        assert time.monotonic() - started < 1.0  # concurrent, not 5 × 0.3 s
        assert registry.polls == 2
        assert calls[:5] == [f"reload {u}" for u in urls]  # all reloads, then the refresh
        assert sorted(calls[5:]) == [f"info {u}" for u in urls]
        assert list(results) == urls
        first, second, failing, garbled, dead = (results[u] for u in urls)
        assert (first.status, first.current, first.ready, first.error) == (200, OLD, True, None)
        assert first.versions == [OLD, NEW]
        assert (second.status, second.current) == (202, OLD)
        assert (failing.status, failing.error) == (503, "store unreachable")
        assert garbled.status == 200 and garbled.error is not None
        assert garbled.error.startswith("not a reload answer")
        assert (dead.status, dead.error) == (None, "unreachable (refused)")
        for url in urls:  # the refresh read what each shard reports after its reload
            info = registry.states[url].info
            assert info is not None and info.versions[0].live  # OLD live again

    asyncio.run(go())


def test_the_app_limits_numpy_blas_to_the_setting() -> None:
    """Two BLAS threads made the router's tiny per-query vector work ~10 % dearer at
    concurrency 8 (docs/benchmarks.md §10): the app applies `SIMSEARCH_BLAS_THREADS`."""
    original = {i["user_api"]: i["num_threads"] for i in threadpool_info()}
    try:
        threadpool_limits(limits=2, user_api="blas")
        create_app(load_settings(RouterSettings, shards="http://127.0.0.1:1", blas_threads=1))
        blas = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
        assert blas and set(blas) == {1}
    finally:
        threadpool_limits(limits=original.get("blas"), user_api="blas")
