"""What routes get injected: the service and, per route class, the access gate.

`Annotated[..., Depends(...)]` aliases, as in the FastAPI full-stack template: a route
takes `service: ServiceDep` and gets the one `RouterService` the lifespan built (never a
module global). Each guard runs the access gate for one route class (rate limits, then
the API key: docs/security.md) and is listed in a route's `dependencies=[...]`;
`AdminKey` also hands the route the admin key, which `/admin/reload` sends on to shards.
The `Collection*Guard`s check the key against the collection the `{name}` path
parameter names; the others count as the default collection.
Built once at import: the guards are plain functions, the gate itself lives on
`app.state` (one per app).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from simsearch.router.access import guard
from simsearch.router.service import RouterService

__all__ = [
    "AdminKey",
    "CollectionImageSearchGuard",
    "CollectionImagesGuard",
    "CollectionVectorGuard",
    "ImageSearchGuard",
    "ImagesGuard",
    "ServiceDep",
    "VectorGuard",
    "get_service",
]


async def get_service(request: Request) -> RouterService:
    """The service created in the lifespan (injected, never a module global)."""
    service: RouterService = request.app.state.service
    return service


ServiceDep = Annotated[RouterService, Depends(get_service)]

VectorGuard = Depends(guard("vector_search"))
ImageSearchGuard = Depends(guard("image_search"))
ImagesGuard = Depends(guard("images"))
AdminKey = Annotated[str | None, Depends(guard("admin"))]
CollectionVectorGuard = Depends(guard("vector_search", "name"))
CollectionImageSearchGuard = Depends(guard("image_search", "name"))
CollectionImagesGuard = Depends(guard("images", "name"))
