"""The router's public HTTP API (FastAPI, OpenAPI at /docs). Routes stay thin.

POST /search/vector        {"vector": [...]} or {"vectors": [[...], ...]}, k, nprobe, refine
POST /search/image         multipart `file` → embedder → search (the old service's endpoint)
GET  /search/similar/{id}  search with an indexed image's own vector (it ranks first)
GET  /images/{id}          the image bytes, or a 307 to a presigned URL (public S3 endpoint)
GET  /health               healthy | degraded | unhealthy, shard counts, coverage
GET  /stats                totals, index version, P, every shard's partitions and state
POST /admin/reload         every shard polls CURRENT now; then shards are re-read (admin key)
GET  /health/live          the process answers
GET  /health/ready         some index version is fully covered by shards that are up
GET  /metrics              Prometheus

Every search answer says how complete it is (`coverage`, `partial`, `index_version`);
`?strict=true` turns a partial answer into a 503. Searches, images and admin routes go
through `access.guard(route class)`: rate limits, then the API key (docs/security.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import aiohttp
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from starlette.types import Scope

import simsearch
from simsearch.common.apidoc import binary_part, error_responses, multipart_body
from simsearch.common.http import (
    JsonFastPath,
    JsonHandler,
    RequestContextMiddleware,
    health_router,
    install_error_handlers,
    metrics_router,
    read_file_parts,
)
from simsearch.common.telemetry import HttpMetrics
from simsearch.router import status
from simsearch.router.access import AccessGate, guard
from simsearch.router.discovery import ShardRegistry, make_source
from simsearch.router.fanout import FanOut
from simsearch.router.http1 import Http1Pool
from simsearch.router.images import ImageLocator
from simsearch.router.metrics import RouterMetrics
from simsearch.router.page import PAGE_HEADERS, asset, render_page
from simsearch.router.schemas import (
    BatchSearchResponse,
    HealthResponse,
    ReloadResponse,
    SearchResponse,
    StatsResponse,
    VectorQuery,
    answer_fields,
    to_hits,
)
from simsearch.router.service import Knobs, RouterService, Searched
from simsearch.router.settings import RouterSettings
from simsearch.router.transport import Upstream, make_session

log = logging.getLogger(__name__)


async def get_service(request: Request) -> RouterService:
    """The service created in the lifespan (injected, never a module global)."""
    service: RouterService = request.app.state.service
    return service


ServiceDep = Annotated[RouterService, Depends(get_service)]


VectorGuard = Depends(guard("vector_search"))
ImageSearchGuard = Depends(guard("image_search"))
ImagesGuard = Depends(guard("images"))
AdminKey = Annotated[str | None, Depends(guard("admin"))]
IdPath = Annotated[int, Path(description="An image id (from a search result).")]
KQuery = Annotated[
    int | None,
    # minimum in the schema only: k=0 keeps its 400 naming the allowed range
    Query(description="Results to return (1..SIMSEARCH_MAX_K).", json_schema_extra={"minimum": 1}),
]
StrictQuery = Annotated[bool, Query(description="503 instead of a partial answer.")]
NprobeQuery = Annotated[int | None, Query(ge=1, le=65536, description="Override nprobe.")]
RefineQuery = Annotated[int | None, Query(ge=1, le=100, description="Override refine.")]
ReloadTimeout = Annotated[
    float, Query(ge=0, le=300, description="Seconds each shard waits for its poll (then 202).")
]


def respond(searched: Searched, request: Request) -> SearchResponse:
    """The answer to one query, with result URLs under the app's root path."""
    prefix = request.scope.get("root_path", "")
    fields = answer_fields(searched.result, searched.k, searched.took_ms)
    return SearchResponse(results=to_hits(searched.result.hits[0], prefix), **fields)


async def read_upload(request: Request) -> bytes:
    """The bytes of the one file part (`file`); 4xx with the uniform body for anything else."""
    parts = await read_file_parts(request, ("file",), max_files=1, max_fields=16)
    return parts[0]


def _build_service(
    settings: RouterSettings,
    session: aiohttp.ClientSession,
    metrics: RouterMetrics,
) -> RouterService:
    """Wire discovery, fan-out and image look-up around the one shared HTTP client."""
    upstream = Upstream(session, Http1Pool(settings.max_connections, settings.keepalive_expiry_s))

    def gauges() -> None:
        up = sum(1 for s in registry.states.values() if s.up)
        metrics.shards_up.set(up)
        metrics.shards_down.set(len(registry.states) - up)

    registry = ShardRegistry(
        make_source(settings),
        upstream,
        settings.poll_s,
        settings.info_timeout_s,
        on_poll=gauges,
    )
    fanout = FanOut(
        upstream,
        registry,
        metrics,
        retry=settings.retry,
        first_try_share=settings.first_try_share,
        hedge_percentile=settings.hedge_percentile,
        hedge_min_s=settings.hedge_min_ms / 1000,
    )
    images = ImageLocator(
        settings.images_root,
        settings.store,
        settings.index,
        settings.s3_options(),
        settings.public_s3_endpoint,
        settings.presign_expires_s,
        settings.max_image_bytes,
    )
    return RouterService(settings, upstream, registry, fanout, images, metrics)


def create_app(settings: RouterSettings) -> FastAPI:
    """The router app: its shared HTTP session lives as long as the app's lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with make_session(settings) as session:
            service = _build_service(settings, session, router_metrics)
            app.state.service = service
            await service.registry.start()
            service.embedder_watch.start()
            log.info(
                "router ready",
                extra={"shards": len(service.registry.states), "port": settings.port},
            )
            try:
                yield
            finally:
                await service.embedder_watch.stop()
                await service.registry.stop()
                if service.upstream.pool is not None:
                    service.upstream.pool.close()

    registry = CollectorRegistry()
    http_metrics = HttpMetrics("router", registry)
    router_metrics = RouterMetrics(registry)
    app = FastAPI(title="simsearch router", version=simsearch.__version__, lifespan=lifespan)
    app.state.gate = AccessGate.from_settings(settings, router_metrics)
    app.add_middleware(JsonFastPath, routes={("POST", "/search/vector"): _fast_vector_route()})
    app.add_middleware(
        RequestContextMiddleware,
        metrics=http_metrics,
        max_body_bytes=settings.max_body_bytes(),
        route_limits={"/search/vector": settings.max_vector_body_bytes},
    )
    install_error_handlers(app)

    def readiness() -> tuple[bool, str]:
        service: RouterService | None = getattr(app.state, "service", None)
        if service is None:
            return False, "starting"
        registry = service.registry
        return status.readiness(
            registry.states.values(), registry.polls, settings.ready_min_coverage
        )

    app.include_router(health_router(readiness))
    app.include_router(metrics_router(http_metrics))
    _add_search_routes(app)
    _add_status_routes(app)
    _add_admin_routes(app)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(request: Request) -> HTMLResponse:
        """The search page: upload an image, see similar ones (see router/page.py)."""
        html = render_page(needs_key=request.app.state.gate.keys.enabled)
        return HTMLResponse(html, headers=PAGE_HEADERS)

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        """The page's script and style sheet (shipped in the package: router/static/)."""
        data, media_type = asset(name)
        return Response(data, media_type=media_type, headers=PAGE_HEADERS)

    return app


async def vector_answer(
    body: VectorQuery, request: Request, service: RouterService, strict: bool
) -> bytes:
    """`POST /search/vector`'s answer as JSON bytes (the route and its fast path share it)."""
    knobs = Knobs(body.k, body.nprobe, body.refine, strict)
    searched = await service.search_vectors(body.rows(), knobs)
    if body.vectors is None:
        answer: SearchResponse | BatchSearchResponse = respond(searched, request)
    else:
        prefix = request.scope.get("root_path", "")
        fields = answer_fields(searched.result, searched.k, searched.took_ms)
        hits = [to_hits(row, prefix) for row in searched.result.hits]
        answer = BatchSearchResponse(results=hits, **fields)
    return answer.model_dump_json().encode()


def _fast_vector_route() -> JsonHandler:
    """`POST /search/vector` without FastAPI's routing layers (see `JsonFastPath`).

    Its CPU per query sets the router's throughput; FastAPI's routing, dependency and
    exception layers were ~0.2 ms of it. Same checks as the declared route, in order:
    the access gate (rate limits and key), then the body (a query string, `?strict=`,
    takes the declared route).
    """

    async def fast_vector(body: bytes, scope: Scope) -> bytes:
        request = Request(scope)
        request.app.state.gate.check_request("vector_search", request)  # limits, then key
        query = VectorQuery.model_validate_json(body)
        return await vector_answer(query, request, request.app.state.service, False)

    return fast_vector


async def parse_vector_query(request: Request) -> VectorQuery:
    """The body of `/search/vector`, parsed and validated in one pass by pydantic-core.

    FastAPI's own body handling decodes the JSON with the standard library into Python
    lists and then validates those: for a 1280-d vector that was a fifth of the router's
    CPU per query. Errors keep the shape of FastAPI's (a 422 naming `body.<field>`).
    """
    raw = await request.body()
    try:
        return VectorQuery.model_validate_json(raw)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


_VECTOR_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": VectorQuery.model_json_schema()}},
    }
}
_IMAGE_BODY = multipart_body(
    {"file": binary_part("The query image (JPEG, PNG, WebP, GIF, BMP, TIFF).")},
    description="One file part named `file` (with a filename); other parts are ignored.",
)


def _add_search_routes(app: FastAPI) -> None:
    @app.post(
        "/search/vector",
        response_model=SearchResponse | BatchSearchResponse,
        dependencies=[VectorGuard],
        openapi_extra=_VECTOR_BODY,
        responses=error_responses(400, 401, 413, 422, 429, 502, 503),
    )
    async def search_vector(
        body: Annotated[VectorQuery, Depends(parse_vector_query)],
        request: Request,
        service: ServiceDep,
        strict: StrictQuery = False,
    ) -> Response:
        """Nearest images to a vector (cosine; normalised here). `vectors` → one list each.

        Serialised here, once: returning the model would make FastAPI validate it again
        against the response union (measured: ~0.3 ms of a query's CPU).
        """
        answer = await vector_answer(body, request, service, strict)
        return Response(answer, media_type="application/json")

    @app.post(
        "/search/image",
        response_model=SearchResponse,
        dependencies=[ImageSearchGuard],
        openapi_extra=_IMAGE_BODY,
        responses=error_responses(400, 401, 413, 415, 422, 429, 502, 503),
    )
    async def search_image(
        request: Request,
        service: ServiceDep,
        k: KQuery = None,
        strict: StrictQuery = False,
        nprobe: NprobeQuery = None,
        refine: RefineQuery = None,
    ) -> SearchResponse:
        """Nearest images to an uploaded image (multipart part `file`)."""
        blob = await read_upload(request)
        searched = await service.search_image(blob, Knobs(k, nprobe, refine, strict))
        return respond(searched, request)

    @app.get(
        "/search/similar/{id}",
        response_model=SearchResponse,
        dependencies=[VectorGuard],
        responses=error_responses(400, 401, 404, 422, 429, 502, 503),
    )
    async def search_similar(
        id: IdPath,
        request: Request,
        service: ServiceDep,
        k: KQuery = None,
        strict: StrictQuery = False,
        nprobe: NprobeQuery = None,
        refine: RefineQuery = None,
    ) -> SearchResponse:
        """Images similar to an indexed one. The image itself is kept: it ranks first (≈1.0)."""
        searched = await service.search_similar(id, Knobs(k, nprobe, refine, strict))
        return respond(searched, request)

    @app.get(
        "/images/{id}",
        dependencies=[ImagesGuard],
        response_class=Response,
        responses={
            200: {"content": {"image/*": {}}},
            307: {"description": "presigned URL"},
            **error_responses(401, 404, 413, 422, 429, 503),
        },
    )
    async def image(id: IdPath, service: ServiceDep) -> Response:
        """The indexed image's bytes (content type from its magic bytes) or a redirect."""
        reply = await service.image(id)
        if reply.redirect is not None:
            return RedirectResponse(reply.redirect, status_code=307)
        headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=300"}
        return Response(reply.data, media_type=reply.media_type, headers=headers)


def _add_status_routes(app: FastAPI) -> None:
    @app.get("/health", response_model=HealthResponse, responses={503: {"model": HealthResponse}})
    async def health(service: ServiceDep) -> JSONResponse:
        """healthy: complete and every shard up; degraded: answers, but partial or a shard
        down; unhealthy (503): no shard serves anything."""
        registry = service.registry
        body = status.health(
            list(registry.states.values()), registry.polls, service.embedder_watch.state
        )
        code = 503 if body.status == "unhealthy" else 200
        return JSONResponse(body.model_dump(), status_code=code)

    @app.get("/stats", response_model=StatsResponse)
    async def stats(service: ServiceDep) -> StatsResponse:
        """Totals, the version queries use, and every shard's partitions and state."""
        return status.stats(list(service.registry.states.values()), time.monotonic())


def _add_admin_routes(app: FastAPI) -> None:
    @app.post(
        "/admin/reload",
        response_model=ReloadResponse,
        responses=error_responses(401, 403, 422, 429),
    )
    async def reload(
        key: AdminKey, service: ServiceDep, timeout_s: ReloadTimeout = 30.0
    ) -> ReloadResponse:
        """Every known shard polls CURRENT now (e.g. after `simsearch index rollback`), then
        the router re-reads their /info; 200 with each shard's outcome, failures included.

        Needs an admin key (a search key: 403; with no keys configured, loopback clients
        only): it makes every shard hit the object store. The key is sent on to the shards.
        """
        return ReloadResponse(shards=await service.registry.reload_all(timeout_s, key))
