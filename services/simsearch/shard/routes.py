"""The shard's FastAPI routes, thin: each one calls the service and shapes the answer.

`POST /search` is declared here for the OpenAPI document and for requests the fast path
does not take; the hot one is `app.fast_search`, which answers the same route without
FastAPI's routing layers (see `JsonFastPath`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse

from simsearch.common.apidoc import error_responses
from simsearch.common.wire import (
    ShardCandidates,
    ShardInfo,
    ShardItem,
    ShardReload,
    ShardSearchRequest,
)
from simsearch.shard.deps import AdminDep, CollectionQuery, ItemIdPath, ReloadTimeout, ServiceDep

router = APIRouter()


@router.post(
    "/search", response_model=ShardCandidates, responses=error_responses(400, 404, 409, 422)
)
async def search(body: ShardSearchRequest, service: ServiceDep) -> Response:
    """Top k·refine candidates of each query over exactly the partitions named, of the
    version and collection named (404: a collection this shard does not poll).

    Serialised here, once: FastAPI would validate the model it was just given again.
    """
    found = await service.search(body)
    return Response(found.model_dump_json(), media_type="application/json")


@router.get(
    "/items/{item_id}",
    response_model=ShardItem,
    responses=error_responses(400, 404, 409, 422),
)
async def item(
    item_id: ItemIdPath,
    service: ServiceDep,
    version: Annotated[str | None, Query()] = None,
    collection: CollectionQuery = None,
) -> ShardItem:
    """One indexed image: 404 if unknown (or its collection is not polled here), 409 if
    its partition is not served here."""
    return service.item(item_id, version, collection)


@router.get("/info", response_model=ShardInfo)
async def info(service: ServiceDep) -> ShardInfo:
    """What this shard serves now; the router plans every query from it."""
    return service.info()


@router.post(
    "/admin/reload",
    response_model=ShardReload,
    responses={
        202: {"model": ShardReload, "description": "the poll is still running"},
        **error_responses(401, 403, 422),
    },
    dependencies=[AdminDep],
)
async def reload(service: ServiceDep, timeout_s: ReloadTimeout = 30.0) -> JSONResponse:
    """Poll every collection's CURRENT now instead of in up to `poll_s`: 200 once that
    poll finished, 202 (same body) if it is still loading when `timeout_s` runs out."""
    finished, state = await service.reload(timeout_s)
    return JSONResponse(state.model_dump(), status_code=200 if finished else 202)
