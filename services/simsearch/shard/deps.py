"""The dependencies the shard's routes declare (`Annotated` aliases, as in the FastAPI
full-stack template's `api/deps.py`): the service from the lifespan, the admin-key
check, and the typed path and query parameters shared by the OpenAPI document."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query, Request

from simsearch.common.apikeys import KeySource, authorize
from simsearch.common.ids import MAX_ID
from simsearch.shard.service import ShardService


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
CollectionQuery = Annotated[
    str | None,
    Query(description="The collection (index name); default: the shard's SIMSEARCH_INDEX."),
]
ReloadTimeout = Annotated[
    float,
    Query(
        ge=0,
        le=300,
        description="Seconds to wait for the poll (0: just trigger it); then 202 if unfinished.",
    ),
]
