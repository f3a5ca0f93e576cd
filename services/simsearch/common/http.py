"""The HTTP edge every service shares: request ids, body limits, errors, health, metrics.

Domain code raises `simsearch.common.errors` exceptions, which carry no HTTP: this module
is the one place that turns them into status codes (`status_for`, one table resolved by
the class's MRO), headers (`headers_for`) and JSON bodies, so every service answers bad
input the same way: `{"status": "error", "error": <code>, "detail": <reason>,
"request_id": …}`. The FastAPI handlers, the raw-ASGI fast path (`JsonFastPath`), the
body-limit refusal and the embedder's per-key `errors` all go through it.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from simsearch.common import errors
from simsearch.common.apidoc import ReadyBody, install_openapi
from simsearch.common.errors import (
    EmptyInput,
    MalformedBody,
    PayloadTooLarge,
    RateLimited,
    SimsearchError,
    UnsupportedMediaType,
    UpstreamRejected,
    ValidationFailed,
)
from simsearch.common.telemetry import (
    REQUEST_ID_HEADER,
    HttpMetrics,
    new_request_id,
    request_id_var,
)

log = logging.getLogger("simsearch.http")

ReadinessCheck = Callable[[], tuple[bool, str]]


class _BodyTooLarge(Exception):
    """Raised inside `receive` when a streamed body passes the limit."""


# The one map from the error tree to HTTP. A class not listed takes its nearest listed
# ancestor's status (`status_for`), so a new subclass answers like its parent until it is
# given a line here; `SimsearchError` itself (and `ConfigError`) is a 500.
_STATUS: dict[type[SimsearchError], int] = {
    errors.SimsearchError: 500,
    errors.BadInput: 400,
    errors.ValidationFailed: 422,
    errors.PayloadTooLarge: 413,
    errors.ImageTooLarge: 413,
    errors.UnsupportedMediaType: 415,
    errors.NotFound: 404,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,  # not 401: the same request with the same key will never pass
    errors.RateLimited: 429,
    errors.NotServed: 409,  # not 404: it exists, just not here now; the router retries
    errors.StorageError: 503,
    errors.ObjectNotFound: 404,
    errors.CorruptIndex: 503,  # not 500: the service is fine, the data it serves is not (yet)
    errors.Unavailable: 503,
    errors.TopologyUnknown: 503,
    errors.NoImagesRoot: 503,
    errors.UpstreamError: 502,
    errors.UpstreamFailure: 503,  # callers catch it; one that escapes means "not now"
    errors.Overloaded: 503,
}


def status_for(err: SimsearchError) -> int:
    """The HTTP status `err` is answered with: an `UpstreamRejected`'s own, else the
    table's entry for its class or for the nearest ancestor that has one (a walk of at
    most a few dict look-ups, on error answers only)."""
    if isinstance(err, UpstreamRejected):
        return err.upstream_status
    return next(_STATUS[cls] for cls in type(err).__mro__ if cls in _STATUS)


def headers_for(err: SimsearchError) -> dict[str, str]:
    """Extra HTTP headers the answer to `err` carries (`Retry-After`; none for most)."""
    if isinstance(err, RateLimited):
        return {"Retry-After": str(err.retry_after_s)}
    return {}


def error_body(err: SimsearchError) -> dict[str, Any]:
    """The JSON body for a domain error (also used by tests to know the shape)."""
    return {
        "status": "error",
        "error": err.code,
        "detail": err.reason,
        "request_id": request_id_var.get(),
    }


def _json_error(
    status: int, code: str, detail: Any, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = {"status": "error", "error": code, "detail": detail, "request_id": request_id_var.get()}
    # the middleware adds X-Request-ID
    return JSONResponse(body, status_code=status, headers=headers)


class RequestContextMiddleware:
    """Pure ASGI middleware: request id, body-size limit, metrics and one access log line.

    The body limit is enforced while the body streams in (and up front from
    Content-Length), so an oversized upload is refused with 413 before it is buffered.
    """

    def __init__(
        self,
        app: ASGIApp,
        metrics: HttpMetrics,
        max_body_bytes: int,
        route_limits: Mapping[str, int] | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        # a path's own limit: a JSON route must not accept an image upload's size, since
        # parsing 20 MB of JSON holds the event loop (and every other request) for seconds
        self.route_limits = dict(route_limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        rid = headers.get(REQUEST_ID_HEADER.lower()) or new_request_id()
        token = request_id_var.set(rid[:64])
        started = time.perf_counter()
        status = {"code": 500, "sent": False}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                status["sent"] = True
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (REQUEST_ID_HEADER.encode(), rid.encode("latin-1")),
                ]
            await send(message)

        limit = self.route_limits.get(scope["path"], self.max_body_bytes)
        try:
            declared = int(headers.get("content-length", "0") or 0)
            if declared > limit:
                await self._too_large(send_with_id, declared, limit)
                return
            await self.app(scope, self._limited(receive, limit), send_with_id)
        except _BodyTooLarge:
            if not status["sent"]:
                await self._too_large(send_with_id, None, limit)
        except Exception:  # a bug: answer 500 with the request id while we still know it
            log.exception("unhandled error")
            if not status["sent"]:
                body = {
                    "status": "error",
                    "error": "internal_error",
                    "detail": "internal error; see the logs for this request id",
                    "request_id": rid,
                }
                await JSONResponse(body, status_code=500)(
                    {"type": "http"}, _empty_receive, send_with_id
                )
        finally:
            self._record(scope, status["code"], time.perf_counter() - started)
            request_id_var.reset(token)

    def _limited(self, receive: Receive, limit: int) -> Receive:
        seen = 0

        async def wrapped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _BodyTooLarge()
            return message

        return wrapped

    async def _too_large(self, send: Send, declared: int | None, limit: int) -> None:
        size = f"{declared} bytes" if declared is not None else "the body"
        err = PayloadTooLarge(f"request body {size} is over the limit of {limit} bytes")
        response = JSONResponse(error_body(err), status_code=status_for(err))
        await response({"type": "http"}, _empty_receive, send)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        self.metrics.observe(template, scope.get("method", "?"), status, seconds)
        log.info(
            "%s %s %d %.1fms",
            scope.get("method"),
            scope.get("path"),
            status,
            seconds * 1000,
            extra={"route": template, "status": status, "duration_ms": round(seconds * 1000, 2)},
        )


async def _empty_receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


# Codes for the errors Starlette/FastAPI raise themselves (no route, wrong method, a body
# their parsers refuse); any other status gets its HTTP phrase in snake case.
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 400: "bad_input"}


def http_error_code(status: int) -> str:
    """The `error` code of a framework-raised HTTP error (see `_HTTP_CODES`)."""
    if status in _HTTP_CODES:
        return _HTTP_CODES[status]
    try:
        return re.sub(r"[^a-z0-9]+", "_", HTTPStatus(status).phrase.lower()).strip("_")
    except ValueError:
        return "http_error"


def _http_error_detail(request: Request, exc: StarletteHTTPException) -> str:
    """The framework's detail, or — where it is only the status phrase — what was wrong."""
    detail = str(exc.detail)
    if exc.status_code == 404 and detail == "Not Found":
        return f"no route {request.url.path}"
    if exc.status_code == 405 and detail == "Method Not Allowed":
        allowed = (exc.headers or {}).get("Allow", "")
        return f"{request.method} is not allowed on {request.url.path}; allowed: {allowed}"
    return detail


def install_error_handlers(app: FastAPI) -> None:
    """Map the exception tree to status codes (bugs become a 500 in the middleware).

    Errors the framework raises itself (an unknown route, a method not allowed, a body
    its parsers refuse) get the same body as ours, headers (`Allow`) kept; the OpenAPI
    document is rewritten to declare that body (`simsearch.common.apidoc`).
    """
    install_openapi(app)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code in (204, 304):  # no body allowed
            return Response(status_code=exc.status_code, headers=exc.headers)
        detail = _http_error_detail(request, exc)
        return _json_error(exc.status_code, http_error_code(exc.status_code), detail, exc.headers)

    @app.exception_handler(SimsearchError)
    async def domain_error(_: Request, exc: SimsearchError) -> JSONResponse:
        return _domain_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return _domain_response(ValidationFailed("; ".join(problems)))


def _domain_response(err: SimsearchError) -> JSONResponse:
    """The answer to a domain error (a 5xx is logged: someone may have to act on it)."""
    status = status_for(err)
    if status >= 500:
        log.warning("request failed: %s", err.reason, extra={"error": err.code})
    return _json_error(status, err.code, err.reason, headers_for(err))


def health_router(ready: ReadinessCheck) -> APIRouter:
    """`/health/live` (the process answers) and `/health/ready` (it can do its job)."""
    router = APIRouter(tags=["health"])

    @router.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "alive"}

    @router.get(
        "/health/ready",
        response_model=ReadyBody,
        responses={503: {"model": ReadyBody, "description": "Not ready; the detail says why."}},
    )
    async def readiness() -> JSONResponse:
        ok, reason = ready()
        body = {"status": "ready" if ok else "not_ready", "detail": reason}
        return JSONResponse(body, status_code=200 if ok else 503)

    return router


def metrics_router(metrics: HttpMetrics) -> APIRouter:
    """`/metrics` in the Prometheus text format, from the app's own registry."""
    router = APIRouter(tags=["metrics"])

    @router.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router


async def read_file_parts(
    request: Request, names: tuple[str, ...], max_files: int, max_fields: int
) -> list[bytes]:
    """The bytes of every file part named one of `names`, in order (other parts are ignored).

    Refused with the uniform error body: not multipart (415); a body the multipart parser
    refuses — no boundary, broken framing, more than `max_files` files or `max_fields`
    fields (400 `malformed_body`); no file part of those names (400 `empty_input`), with
    the reason when such a part came without a filename (a plain field, not a file).
    """
    wanted = " or ".join(f"'{name}'" for name in names)
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise UnsupportedMediaType(
            f"expected multipart/form-data with file parts named {wanted}, got "
            f"{content_type or 'no content type'}"
        )
    try:
        async with request.form(max_files=max_files, max_fields=max_fields) as form:
            parts = [(k, v) for k, v in form.multi_items() if k in names]
            uploads = [v for _, v in parts if isinstance(v, UploadFile)]
            if not uploads:
                raise EmptyInput(_no_file_reason(parts, wanted))
            return [await upload.read() for upload in uploads]
    except MultiPartException as exc:  # raised as is outside an app (`"app" not in scope`)
        raise MalformedBody(f"multipart body refused: {exc.message}") from None
    except StarletteHTTPException as exc:  # Starlette wraps its parser's refusals in a 400
        raise MalformedBody(f"multipart body refused: {exc.detail}") from None


def _no_file_reason(parts: list[tuple[str, Any]], wanted: str) -> str:
    if parts:  # a part of the right name without a filename is a form field to the parser
        return (
            f"part '{parts[0][0]}' has no filename, so it is a form field, not a file: send "
            'it as a file part (Content-Disposition: form-data; name="…"; filename="…")'
        )
    return f"no file in the request: send the image in a file part named {wanted}"


JsonHandler = Callable[[bytes, Scope], Awaitable[bytes]]


class _Route:
    """What `RequestContextMiddleware` reads for its metrics label (`scope["route"].path`)."""

    def __init__(self, path: str) -> None:
        self.path = path


class JsonFastPath:
    """Pure ASGI: serve a few hot JSON POST routes without FastAPI's routing layers.

    A shard's `/search` is called once per query per shard; Starlette's routing,
    dependency injection and exception middlewares cost a measurable share of a
    sub-millisecond search. Routes given here read the body, call `handler(body) ->
    JSON bytes` and answer with the same error bodies as the app's handlers (a domain
    error → `status_for` and its code, a pydantic `ValidationError` → `ValidationFailed`).
    A request with a query string goes the FastAPI way (its parameters are validated there).
    Installed inside `RequestContextMiddleware`, so request ids, the body limit, metrics
    and the access log apply as for every other route; the route still appears in the
    OpenAPI schema from its FastAPI declaration (which stays as the documented contract).
    """

    def __init__(self, app: ASGIApp, routes: dict[tuple[str, str], JsonHandler]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = None
        if scope["type"] == "http" and not scope.get("query_string"):
            handler = self.routes.get((scope["method"], scope["path"]))
        if handler is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = _Route(scope["path"])
        body = await _read_body(receive)
        status, payload = 200, b""
        extra: list[tuple[bytes, bytes]] = []
        try:
            payload = await handler(body, scope)
        except SimsearchError as exc:
            status, payload, extra = _fast_error(exc)
        except ValidationError as exc:
            problems = [
                f"{'.'.join(str(p) for p in ('body', *e['loc']))}: {e['msg']}"
                for e in exc.errors(include_url=False)
            ]
            status, payload, extra = _fast_error(ValidationFailed("; ".join(problems)))
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            *extra,
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def _fast_error(err: SimsearchError) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """`JsonFastPath`'s answer to `err`: the status, body and headers the handlers give."""
    status = status_for(err)
    if status >= 500:
        log.warning("request failed: %s", err.reason, extra={"error": err.code})
    extra = [(k.lower().encode(), v.encode()) for k, v in headers_for(err).items()]
    return status, json.dumps(error_body(err)).encode(), extra


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)
