"""The shard's HTTP API (FastAPI). Routes stay thin; the work is in `service.py`.

POST /search         a query batch for named partitions of one version → candidates
GET  /items/{id}     path and exact vector of one indexed image (?version=)
GET  /info           ordinal, replicas seen, versions with ready/loading/failed partitions
POST /admin/reload   poll CURRENT now and wait for that poll (?timeout_s=, default 30); needs an
                     admin key when keys are configured (SIMSEARCH_ADMIN_KEYS / _API_KEYS_FILE)
GET  /health/live    the process answers
GET  /health/ready   a version is loaded (see `ShardService.readiness`)
GET  /metrics        Prometheus
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from starlette.types import Scope

import simsearch
from simsearch.common.apidoc import error_responses
from simsearch.common.apikeys import KeySource, authorize
from simsearch.common.errors import ConfigError, InvalidParameter
from simsearch.common.http import (
    JsonFastPath,
    RequestContextMiddleware,
    health_router,
    install_error_handlers,
    metrics_router,
)
from simsearch.common.ids import MAX_ID
from simsearch.common.layout import IndexLayout
from simsearch.common.storage import open_store
from simsearch.common.telemetry import HttpMetrics
from simsearch.common.wire import (
    ShardCandidates,
    ShardInfo,
    ShardItem,
    ShardReload,
    ShardSearchRequest,
)
from simsearch.shard.loader import PartitionCache
from simsearch.shard.metrics import ShardMetrics
from simsearch.shard.service import ShardService
from simsearch.shard.settings import ShardSettings
from simsearch.shard.topology import FileTopology, StaticTopology, Topology
from simsearch.shard.versions import Holdings

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
    """Store, layout, topology and holdings from the settings; nothing is loaded yet.

    Raises ConfigError for a bad store URI, index name or topology file, so the CLI can
    exit before binding the port.
    """
    store = open_store(settings.store, settings.s3_options())
    try:
        layout = IndexLayout(store, settings.index)
    except InvalidParameter as err:
        raise ConfigError(f"SIMSEARCH_INDEX: {err.reason}") from err
    cache = PartitionCache(layout, settings.cache_path, metrics)
    holdings = Holdings(cache, settings.ordinal, settings.replication, settings.drain_s)
    return ShardService(settings, layout, build_topology(settings), holdings, metrics)


async def get_service(request: Request) -> ShardService:
    """The service created in the lifespan (injected, never a module global)."""
    service: ShardService = request.app.state.service
    return service


ServiceDep = Annotated[ShardService, Depends(get_service)]


async def require_admin_key(request: Request) -> None:
    """With keys configured, `/admin/reload` needs an admin key (401 none or unknown, 403 a
    search key); with none it stays open: shards are internal, reachable from the router
    only (the chart's NetworkPolicy), and local mode has no keys."""
    keys: KeySource = request.app.state.keys
    authorize(keys, request.headers, "admin")


AdminDep = Depends(require_admin_key)


# the id range in the schema only: an id outside it keeps its 400 naming the range
ItemIdPath = Annotated[
    int, Path(json_schema_extra={"format": "int64", "minimum": 0, "maximum": MAX_ID})
]
ReloadTimeout = Annotated[
    float,
    Query(
        ge=0,
        le=300,
        description="Seconds to wait for the poll (0: just trigger it); then 202 if unfinished.",
    ),
]


def create_app(settings: ShardSettings, service: ShardService | None = None) -> FastAPI:
    """The shard app; `service` may be passed in (the CLI builds it first to fail fast on bad
    settings, tests inject one) — else it is built in the lifespan. Its metrics registry is
    the app's, so `/metrics` shows HTTP and shard metrics together."""
    shard_metrics = service.metrics if service else ShardMetrics(CollectorRegistry())
    http_metrics = HttpMetrics("shard", shard_metrics.registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        running = service or build_service(settings, shard_metrics)
        app.state.service = running
        running.start()
        log.info(
            "shard %d polling %s",
            settings.ordinal,
            settings.store,
            extra={"index": settings.index, "topology": running.topology.describe()},
        )
        yield
        await asyncio.to_thread(running.stop)
        await asyncio.to_thread(close_topology, running.topology)

    app = FastAPI(title="simsearch shard", version=simsearch.__version__, lifespan=lifespan)
    app.state.keys = settings.key_source()

    async def fast_search(body: bytes, _scope: Scope) -> bytes:
        """`POST /search` without FastAPI's routing layers (see `JsonFastPath`)."""
        running: ShardService = app.state.service
        found = await running.search(ShardSearchRequest.model_validate_json(body))
        return found.model_dump_json().encode()

    # inside RequestContextMiddleware (added after it, so it is the outer one)
    app.add_middleware(JsonFastPath, routes={("POST", "/search"): fast_search})
    app.add_middleware(
        RequestContextMiddleware, metrics=http_metrics, max_body_bytes=settings.max_request_bytes
    )
    install_error_handlers(app)

    def readiness() -> tuple[bool, str]:
        running: ShardService | None = getattr(app.state, "service", None)
        return running.readiness() if running is not None else (False, "starting")

    app.include_router(health_router(readiness))
    app.include_router(metrics_router(http_metrics))

    @app.post("/search", response_model=ShardCandidates, responses=error_responses(400, 409, 422))
    async def search(body: ShardSearchRequest, service: ServiceDep) -> Response:
        """Top k·refine candidates of each query over exactly the partitions named.

        Serialised here, once: FastAPI would validate the model it was just given again.
        """
        found = await service.search(body)
        return Response(found.model_dump_json(), media_type="application/json")

    @app.get(
        "/items/{item_id}",
        response_model=ShardItem,
        responses=error_responses(400, 404, 409, 422),
    )
    async def item(
        item_id: ItemIdPath, service: ServiceDep, version: Annotated[str | None, Query()] = None
    ) -> ShardItem:
        """One indexed image: 404 if unknown, 409 if its partition is not served here."""
        return service.item(item_id, version)

    @app.get("/info", response_model=ShardInfo)
    async def info(service: ServiceDep) -> ShardInfo:
        """What this shard serves now; the router plans every query from it."""
        return service.info()

    @app.post(
        "/admin/reload",
        response_model=ShardReload,
        responses={
            202: {"model": ShardReload, "description": "the poll is still running"},
            **error_responses(401, 403, 422),
        },
        dependencies=[AdminDep],
    )
    async def reload(service: ServiceDep, timeout_s: ReloadTimeout = 30.0) -> JSONResponse:
        """Poll CURRENT now instead of in up to `poll_s`: 200 once that poll finished,
        202 (same body) if it is still loading when `timeout_s` runs out."""
        finished, state = await service.reload(timeout_s)
        return JSONResponse(state.model_dump(), status_code=200 if finished else 202)

    return app
