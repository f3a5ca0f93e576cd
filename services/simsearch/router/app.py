"""The router's public HTTP API (FastAPI, OpenAPI at /docs): the app factory.

POST /search/vector        {"vector": [...]} or {"vectors": [[...], ...]}, k, nprobe, refine
POST /search/image         multipart `file` → embedder → search (the old service's endpoint)
GET  /search/similar/{id}  search with an indexed image's own vector (it ranks first)
GET  /images/{id}          the image bytes, or a 307 to a presigned URL (public S3 endpoint)
GET  /collections          the collections (named indexes) the shards serve
GET  /collections/{name}   one collection and its versions
     /collections/{name}/search/{vector,image,similar/{id}}, /collections/{name}/images/{id}
                           the routes above on that collection (those above: the default one)
GET  /health               healthy | degraded | unhealthy, shard counts, coverage
GET  /stats                totals, index version, P, every shard's partitions and state
POST /admin/reload         every shard polls CURRENT now; then shards are re-read (admin key)
GET  /health/live          the process answers
GET  /health/ready         some index version is fully covered by shards that are up
GET  /metrics              Prometheus

Every search answer says how complete it is (`coverage`, `partial`, `index_version`);
`?strict=true` turns a partial answer into a 503. Searches, images and admin routes go
through `access.guard(route class)`: rate limits, then the API key (docs/security.md).
The routes are in `router/api/routes/`, their injected pieces in `router/api/deps.py`;
this module builds the service in the lifespan, adds the middleware, includes the routes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import aiohttp
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from threadpoolctl import threadpool_limits

import simsearch
from simsearch.common.http import (
    JsonFastPath,
    RequestContextMiddleware,
    health_router,
    install_error_handlers,
    metrics_router,
)
from simsearch.common.telemetry import HttpMetrics
from simsearch.router import status
from simsearch.router.access import AccessGate
from simsearch.router.api.routes import admin, collections, images, page, search
from simsearch.router.api.routes import status as status_routes
from simsearch.router.discovery import make_source
from simsearch.router.fanout import FanOut
from simsearch.router.http1 import Http1Pool
from simsearch.router.images import ImageLocator
from simsearch.router.metrics import RouterMetrics
from simsearch.router.registry import ShardRegistry
from simsearch.router.service import RouterService
from simsearch.router.settings import RouterSettings
from simsearch.router.transport import Upstream, make_session

__all__ = ["build_service", "create_app"]

log = logging.getLogger(__name__)

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def create_app(settings: RouterSettings) -> FastAPI:
    """The router app: its shared HTTP session lives as long as the app's lifespan."""
    threadpool_limits(limits=settings.blas_threads, user_api="blas")  # see the setting
    prometheus = CollectorRegistry()  # per app: several apps in one process never collide
    http_metrics = HttpMetrics("router", prometheus)
    metrics = RouterMetrics(prometheus)
    app = FastAPI(
        title="simsearch router",
        version=simsearch.__version__,
        lifespan=_lifespan(settings, metrics),
    )
    app.state.gate = AccessGate.from_settings(settings, metrics)
    app.add_middleware(
        JsonFastPath, routes={("POST", "/search/vector"): search.fast_vector_route()}
    )
    app.add_middleware(
        RequestContextMiddleware,
        metrics=http_metrics,
        max_body_bytes=settings.max_body_bytes(),
        route_limits={"/search/vector": settings.max_vector_body_bytes},
    )
    install_error_handlers(app)
    app.include_router(health_router(_readiness(app, settings)))
    app.include_router(metrics_router(http_metrics))
    for routes in (search, images, collections, status_routes, admin, page):
        app.include_router(routes.router)
    _declare_schemas(app, search.SCHEMAS)
    return app


def _declare_schemas(app: FastAPI, schemas: dict[str, Any]) -> None:
    """Add `schemas` to the OpenAPI document's components: the vector body (declared by
    hand, for its one-pass parse) refers to the filter's node models there."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        document = generate()
        components = document.setdefault("components", {}).setdefault("schemas", {})
        for name, schema in schemas.items():
            components.setdefault(name, schema)
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def _lifespan(settings: RouterSettings, metrics: RouterMetrics) -> Lifespan:
    """Build the service on start-up (discovery polls once first); stop it on shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with make_session(settings) as session:
            service = build_service(settings, session, metrics)
            app.state.service = service
            await service.registry.start()
            service.embedder_watch.start()
            service.recall.start()
            log.info(
                "router ready",
                extra={"shards": len(service.registry.states), "port": settings.port},
            )
            try:
                yield
            finally:
                await service.recall.stop()
                await service.embedder_watch.stop()
                await service.registry.stop()
                if service.upstream.pool is not None:
                    service.upstream.pool.close()

    return lifespan


def _readiness(app: FastAPI, settings: RouterSettings) -> Callable[[], tuple[bool, str]]:
    """`/health/ready`: not before the lifespan built the service, then `status.readiness`."""

    def readiness() -> tuple[bool, str]:
        service: RouterService | None = getattr(app.state, "service", None)
        if service is None:
            return False, "starting"
        registry = service.registry
        return status.readiness(
            registry.states.values(), registry.polls, settings.ready_min_coverage, settings.index
        )

    return readiness


def build_service(
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
    locator = ImageLocator(
        settings.images_root,
        settings.store,
        settings.index,
        settings.s3_options(),
        settings.public_s3_endpoint,
        settings.presign_expires_s,
        settings.max_image_bytes,
    )
    return RouterService(settings, upstream, registry, fanout, locator, metrics)
