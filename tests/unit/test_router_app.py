"""The router app in-process with no shard answering: every route says why, none is a 500.

Driven through httpx's ASGI transport with the app's lifespan entered by hand (the
transport does not run it), so discovery really polls the dead shard URL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx

from simsearch.common.settings import load_settings
from simsearch.router.app import create_app
from simsearch.router.settings import RouterSettings
from tests.support.s3server import free_port

Scenario = Callable[[httpx.AsyncClient], Awaitable[None]]


def run(scenario: Scenario, api_keys: str | None = None) -> None:
    """Start the app (lifespan included) with one dead shard URL and run `scenario`."""
    dead = f"http://127.0.0.1:{free_port()}"  # nobody listens: connection refused
    settings = load_settings(
        RouterSettings, shards=dead, poll_s=60, info_timeout_s=0.5, api_keys=api_keys
    )
    app = create_app(settings)

    async def go() -> None:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://router") as client:
                await scenario(client)

    asyncio.run(go())


def test_openapi_lists_the_public_routes() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        paths = (await client.get("/openapi.json")).json()["paths"]
        for route in ("/search/vector", "/search/image", "/search/similar/{id}", "/images/{id}"):
            assert route in paths
        assert {"/health", "/stats", "/health/live", "/health/ready", "/metrics"} <= set(paths)

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
