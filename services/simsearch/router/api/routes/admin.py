"""`POST /admin/reload`: every known shard polls CURRENT now (an admin key is needed)."""

from __future__ import annotations

from fastapi import APIRouter

from simsearch.common.api import ReloadResponse
from simsearch.common.apidoc import error_responses
from simsearch.router.api.deps import AdminKey, ServiceDep
from simsearch.router.api.params import ReloadTimeout

__all__ = ["router"]

router = APIRouter()


@router.post(
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
