"""The shared HTTP edge: error mapping, request ids, body limits and metrics.

A tiny app built from the same pieces every service uses, driven in-process through
httpx's ASGI transport (the pieces are under test here, not a service).
"""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI, Request
from prometheus_client import CollectorRegistry

from simsearch.common.errors import CorruptImage, Overloaded
from simsearch.common.http import (
    RequestContextMiddleware,
    health_router,
    install_error_handlers,
    metrics_router,
)
from simsearch.common.telemetry import HttpMetrics, current_request_id


def make_app(ready: bool = True) -> FastAPI:
    app = FastAPI()
    metrics = HttpMetrics("test", CollectorRegistry())
    app.add_middleware(
        RequestContextMiddleware,
        metrics=metrics,
        max_body_bytes=1000,
        route_limits={"/small": 100},
    )
    install_error_handlers(app)
    app.include_router(health_router(lambda: (ready, "why")))
    app.include_router(metrics_router(metrics))

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, object]:
        if item_id == 1:
            raise CorruptImage("bad bytes")
        if item_id == 2:
            raise Overloaded("busy")
        if item_id == 3:
            raise RuntimeError("a bug")
        return {"id": item_id, "rid": current_request_id()}

    @app.post("/upload")
    @app.post("/small")
    async def upload(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    return app


def call(app: FastAPI, method: str, url: str, **kwargs: object) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.request(method, url, **kwargs)  # type: ignore[arg-type]

    return asyncio.run(go())


def test_domain_errors_map_to_status_and_json_body_with_the_request_id() -> None:
    app = make_app()
    response = call(app, "GET", "/items/1", headers={"X-Request-ID": "abc"})
    assert response.status_code == 400
    assert response.json() == {
        "status": "error",
        "error": "corrupt_image",
        "detail": "bad bytes",
        "request_id": "abc",
    }
    assert response.headers["x-request-id"] == "abc"
    assert call(app, "GET", "/items/2").status_code == 503


def test_a_bug_is_a_500_that_still_carries_the_request_id() -> None:
    response = call(make_app(), "GET", "/items/3", headers={"X-Request-ID": "bug-1"})
    assert response.status_code == 500
    assert response.json()["request_id"] == "bug-1"
    assert "a bug" not in response.text  # internals stay in the logs


def test_request_ids_are_made_up_when_missing_and_visible_to_handlers() -> None:
    response = call(make_app(), "GET", "/items/7")
    assert response.json()["rid"] == response.headers["x-request-id"]
    assert len(response.headers["x-request-id"]) == 16


def test_bodies_over_the_limit_get_413_declared_or_streamed() -> None:
    app = make_app()
    assert call(app, "POST", "/upload", content=b"x" * 500).json() == {"size": 500}
    declared = call(app, "POST", "/upload", content=b"x" * 1001)
    assert declared.status_code == 413
    assert declared.json()["error"] == "payload_too_large"

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(5):
            yield b"y" * 300

    streamed = call(app, "POST", "/upload", content=chunks())
    assert streamed.status_code == 413


def test_a_route_of_its_own_has_its_own_body_limit() -> None:
    app = make_app()
    assert call(app, "POST", "/small", content=b"x" * 100).json() == {"size": 100}
    small = call(app, "POST", "/small", content=b"x" * 500)  # fine for /upload, not here
    assert small.status_code == 413 and "limit of 100 bytes" in small.json()["detail"]


def test_validation_errors_are_422_with_the_field_named() -> None:
    response = call(make_app(), "GET", "/items/notanumber")
    assert response.status_code == 422
    assert "item_id" in response.json()["detail"]


def test_health_and_metrics_endpoints() -> None:
    assert call(make_app(ready=False), "GET", "/health/ready").status_code == 503
    app = make_app()
    assert call(app, "GET", "/health/live").json() == {"status": "alive"}
    call(app, "GET", "/items/5")
    text = call(app, "GET", "/metrics").text
    assert 'route="/items/{item_id}"' in text
