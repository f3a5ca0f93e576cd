"""`GET /health` and `GET /stats`: the cluster as discovery last saw it (`router/status.py`),
about the default collection (`GET /collections` reports every one)."""

from __future__ import annotations

import time

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from simsearch.common.api import HealthResponse, StatsResponse
from simsearch.router import status
from simsearch.router.api.deps import ServiceDep

__all__ = ["router"]

router = APIRouter()


@router.get("/health", response_model=HealthResponse, responses={503: {"model": HealthResponse}})
async def health(service: ServiceDep) -> JSONResponse:
    """healthy: complete and every shard up; degraded: answers, but partial or a shard
    down; unhealthy (503): no shard serves anything."""
    registry = service.registry
    body = status.health(
        list(registry.states.values()),
        registry.polls,
        service.embedder_watch.state,
        service.settings.index,
    )
    code = 503 if body.status == "unhealthy" else 200
    return JSONResponse(body.model_dump(), status_code=code)


@router.get("/stats", response_model=StatsResponse)
async def stats(service: ServiceDep) -> StatsResponse:
    """Totals, the version queries use, every shard's partitions and state, and live
    recall per collection and version."""
    states = list(service.registry.states.values())
    return status.stats(states, time.monotonic(), service.settings.index, service.recall.report())
