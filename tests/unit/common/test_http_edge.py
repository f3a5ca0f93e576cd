"""The shared HTTP edge: error mapping, request ids, body limits and metrics.

A tiny app built from the same pieces every service uses, driven in-process through
httpx's ASGI transport (the pieces are under test here, not a service).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI, Request
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from simsearch.common.errors import CorruptImage, Overloaded, RateLimited, StorageError
from simsearch.common.http import (
    JsonFastPath,
    JsonHandler,
    RequestContextMiddleware,
    health_router,
    http_error_code,
    install_error_handlers,
    metrics_router,
    read_file_parts,
)
from simsearch.common.telemetry import HttpMetrics, current_request_id


def make_app(ready: bool = True, fast: dict[tuple[str, str], JsonHandler] | None = None) -> FastAPI:
    app = FastAPI()
    metrics = HttpMetrics("test", CollectorRegistry())
    if fast is not None:  # inside the request context, as the services install it
        app.add_middleware(JsonFastPath, routes=fast)
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
        if item_id == 4:
            raise RateLimited("too many", 7)
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
    limited = call(app, "GET", "/items/4")
    assert limited.status_code == 429 and limited.headers["retry-after"] == "7"


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

    async def chunks() -> AsyncIterator[bytes]:
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


# --- framework errors and multipart bodies in the uniform error body (issue #12) ------


def make_upload_app(max_files: int = 2) -> FastAPI:
    app = make_app()

    @app.post("/files")
    async def files(request: Request) -> dict[str, list[int]]:
        parts = await read_file_parts(request, ("file", "files"), max_files, max_fields=4)
        return {"sizes": [len(p) for p in parts]}

    return app


def assert_uniform(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"status", "error", "detail", "request_id"}, body
    assert body["status"] == "error" and body["error"] == code
    assert isinstance(body["detail"], str) and body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


def test_unknown_routes_and_methods_get_the_uniform_body_and_keep_allow() -> None:
    app = make_app()
    body = assert_uniform(call(app, "GET", "/nowhere"), 404, "not_found")
    assert "/nowhere" in str(body["detail"])
    wrong = call(app, "DELETE", "/items/5")
    body = assert_uniform(wrong, 405, "method_not_allowed")
    assert wrong.headers["allow"] == "GET" and "GET" in str(body["detail"])


def test_framework_http_errors_keep_their_status_and_detail() -> None:
    app = make_app()

    @app.get("/teapot")
    async def teapot() -> None:
        raise StarletteHTTPException(418, detail="short and stout")

    body = assert_uniform(call(app, "GET", "/teapot"), 418, "i_m_a_teapot")
    assert body["detail"] == "short and stout"
    assert http_error_code(599) == "http_error"


def test_file_parts_are_read_by_name_in_order() -> None:
    files = [
        ("file", ("a.jpg", b"aa", "image/jpeg")),
        ("other", ("b.jpg", b"bbb", "image/jpeg")),  # not a name the route reads
        ("files", ("c.jpg", b"c", "image/jpeg")),
    ]
    response = call(make_upload_app(max_files=3), "POST", "/files", files=files)
    assert response.json() == {"sizes": [2, 1]}


def test_malformed_multipart_bodies_are_400_malformed_body() -> None:
    app = make_upload_app()
    no_boundary = call(
        app, "POST", "/files", content=b"x", headers={"content-type": "multipart/form-data"}
    )
    assert "boundary" in str(assert_uniform(no_boundary, 400, "malformed_body")["detail"])
    broken = call(
        app,
        "POST",
        "/files",
        content=b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--\r\n",
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    assert_uniform(broken, 400, "malformed_body")  # a part without a name
    many = [("file", (f"{i}.jpg", b"x", "image/jpeg")) for i in range(3)]
    too_many = call(app, "POST", "/files", files=many)
    assert "Too many files" in str(assert_uniform(too_many, 400, "malformed_body")["detail"])


def test_missing_or_nameless_file_parts_say_what_is_wrong() -> None:
    app = make_upload_app()
    as_json = call(app, "POST", "/files", json={"file": "x"})
    assert_uniform(as_json, 415, "unsupported_media_type")
    field_only = call(app, "POST", "/files", files={"file": (None, b"no filename")})
    body = assert_uniform(field_only, 400, "empty_input")
    assert "no filename" in str(body["detail"])
    other_name = call(app, "POST", "/files", files={"image": ("a.jpg", b"x")})
    assert "'file' or 'files'" in str(assert_uniform(other_name, 400, "empty_input")["detail"])
    upper = call(
        app,
        "POST",
        "/files",
        content=b'--b\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nx'
        b"\r\n--b--\r\n",
        headers={"content-type": "Multipart/Form-Data; boundary=b"},
    )
    assert upper.json() == {"sizes": [1]}  # media types are case-insensitive


# --- the raw-ASGI fast path answers errors as the handlers do ----------------------------


class Query(BaseModel):
    k: int = Field(ge=1)


async def fast_handler(body: bytes, _: Scope) -> bytes:
    query = Query.model_validate_json(body)  # a ValidationError: 422 `validation_error`
    if query.k == 2:
        raise RateLimited("too many", 3)
    if query.k == 3:
        raise StorageError("the store is down")
    if query.k == 4:
        raise CorruptImage("bad bytes")
    return b'{"ok": true}'


def make_fast_app() -> FastAPI:
    return make_app(fast={("POST", "/fast"): fast_handler})


def test_the_fast_path_maps_errors_through_the_same_table() -> None:
    app = make_fast_app()
    assert call(app, "POST", "/fast", content=b'{"k": 1}').json() == {"ok": True}
    limited = call(app, "POST", "/fast", content=b'{"k": 2}')
    assert_uniform(limited, 429, "rate_limited")
    assert limited.headers["retry-after"] == "3"
    assert_uniform(call(app, "POST", "/fast", content=b'{"k": 3}'), 503, "storage_error")
    assert_uniform(call(app, "POST", "/fast", content=b'{"k": 4}'), 400, "corrupt_image")
    invalid = call(app, "POST", "/fast", content=b'{"k": 0}')
    assert str(assert_uniform(invalid, 422, "validation_error")["detail"]).startswith("body.k: ")
