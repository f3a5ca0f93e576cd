"""The shard's HTTP app (FastAPI): settings → service → app. Routes are in `routes.py`,
their dependencies in `deps.py`, the work in `service.py` and the modules it names.

POST /search         a query batch for named partitions of one version of a collection → candidates
GET  /items/{id}     path and exact vector of one indexed image (?collection=, ?version=)
GET  /info           ordinal, replicas seen, collections, versions with ready/loading/failed
                     partitions (each tagged with its collection)
POST /admin/reload   poll every collection's CURRENT now and wait for that poll (?timeout_s=,
                     default 30); needs an admin key when keys are configured
                     (SIMSEARCH_ADMIN_KEYS / _API_KEYS_FILE)
GET  /health/live    the process answers
GET  /health/ready   a version is loaded (see `ShardService.readiness`)
GET  /metrics        Prometheus
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.types import Scope

import simsearch
from simsearch.common.errors import ConfigError, InvalidParameter
from simsearch.common.http import (
    JsonFastPath,
    RequestContextMiddleware,
    health_router,
    install_error_handlers,
    metrics_router,
)
from simsearch.common.storage import open_store
from simsearch.common.telemetry import HttpMetrics
from simsearch.common.wire import ShardSearchRequest
from simsearch.shard import routes
from simsearch.shard.collections import Collections
from simsearch.shard.metrics import ShardMetrics
from simsearch.shard.service import ShardService
from simsearch.shard.settings import ShardSettings
from simsearch.shard.topology import FileTopology, StaticTopology, Topology

log = logging.getLogger(__name__)


def build_topology(settings: ShardSettings) -> Topology:
    """The topology source the settings name (ConfigError if its file is unreadable, or
    the Kubernetes API cannot be configured)."""
    if settings.topology == "file":
        assert settings.topology_file is not None  # the settings validator requires it
        return FileTopology(settings.topology_file)
    if settings.topology == "kubernetes":
        from simsearch.shard.kube import KubernetesTopology  # the client takes ~1 s to import

        assert settings.statefulset is not None  # the settings validator requires it
        return KubernetesTopology(settings.statefulset, settings.namespace)
    return StaticTopology(settings.replicas)


def close_topology(topology: Topology) -> None:
    """Stop a topology's background watch, if it has one (the Kubernetes source)."""
    close = getattr(topology, "close", None)
    if callable(close):
        close()


def build_service(settings: ShardSettings, metrics: ShardMetrics) -> ShardService:
    """Store, collections and topology from the settings; nothing is loaded yet.

    Raises ConfigError for a bad store URI, index name or topology file, so the CLI can
    exit before binding the port.
    """
    store = open_store(settings.store, settings.s3_options())
    try:
        collections = Collections(store, settings, metrics)
    except InvalidParameter as err:  # SIMSEARCH_COLLECTIONS' names are checked as settings
        raise ConfigError(f"SIMSEARCH_INDEX: {err.reason}") from err
    return ShardService(settings, collections, build_topology(settings), metrics)


def create_app(settings: ShardSettings, service: ShardService | None = None) -> FastAPI:
    """The shard app; `service` may be passed in (the CLI builds it first to fail fast on bad
    settings, tests inject one) — else it is built in the lifespan. Its metrics registry is
    the app's, so `/metrics` shows HTTP and shard metrics together."""
    shard_metrics = service.metrics if service else ShardMetrics(CollectorRegistry())
    http_metrics = HttpMetrics("shard", shard_metrics.registry)
    lifespan = _lifespan(settings, service, shard_metrics)
    app = FastAPI(title="simsearch shard", version=simsearch.__version__, lifespan=lifespan)
    app.state.keys = settings.key_source()
    _install_middleware(app, settings, http_metrics)
    install_error_handlers(app)
    app.include_router(health_router(partial(_readiness, app)))
    app.include_router(metrics_router(http_metrics))
    app.include_router(routes.router)
    return app


def _lifespan(
    settings: ShardSettings, service: ShardService | None, metrics: ShardMetrics
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Start the service (built here unless given) and stop it, with its topology, at exit."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        running = service or build_service(settings, metrics)
        app.state.service = running
        running.start()
        log.info(
            "shard %d polling %s",
            settings.ordinal,
            settings.store,
            extra={
                "index": settings.index,
                "collections": settings.collections or "discovered",
                "topology": running.topology.describe(),
            },
        )
        yield
        await asyncio.to_thread(running.stop)
        await asyncio.to_thread(close_topology, running.topology)

    return lifespan


def _install_middleware(app: FastAPI, settings: ShardSettings, metrics: HttpMetrics) -> None:
    """The raw-ASGI fast path for `POST /search`, inside the request context (ids, metrics,
    body limit): added first, so that RequestContextMiddleware is the outer one."""

    async def fast_search(body: bytes, _scope: Scope) -> bytes:
        """`POST /search` without FastAPI's routing layers (see `JsonFastPath`)."""
        running: ShardService = app.state.service
        found = await running.search(ShardSearchRequest.model_validate_json(body))
        return found.model_dump_json().encode()

    app.add_middleware(JsonFastPath, routes={("POST", "/search"): fast_search})
    app.add_middleware(
        RequestContextMiddleware, metrics=metrics, max_body_bytes=settings.max_request_bytes
    )


def _readiness(app: FastAPI) -> tuple[bool, str]:
    """The service's readiness once the lifespan has made it; "starting" before."""
    running: ShardService | None = getattr(app.state, "service", None)
    return running.readiness() if running is not None else (False, "starting")
