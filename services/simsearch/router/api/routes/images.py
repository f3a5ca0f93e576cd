"""`GET /images/{id}`: an indexed image's bytes, or a redirect to a presigned URL."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

from simsearch.common.apidoc import error_responses
from simsearch.router.api.deps import ImagesGuard, ServiceDep
from simsearch.router.api.params import IdPath
from simsearch.router.service import RouterService

__all__ = ["IMAGE_RESPONSES", "image_answer", "router"]

router = APIRouter()

_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=300"}
IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/*": {}}},
    307: {"description": "presigned URL"},
    **error_responses(401, 403, 404, 413, 422, 429, 503),
}


async def image_answer(id_: int, service: RouterService, collection: str | None = None) -> Response:
    """Image `id_` of `collection` (None: the default one), as bytes or a redirect; shared
    with `GET /collections/{name}/images/{id}`."""
    reply = await service.image(id_, collection)
    if reply.redirect is not None:
        return RedirectResponse(reply.redirect, status_code=307)
    return Response(reply.data, media_type=reply.media_type, headers=_HEADERS)


@router.get(
    "/images/{id}", dependencies=[ImagesGuard], response_class=Response, responses=IMAGE_RESPONSES
)
async def image(id: IdPath, service: ServiceDep) -> Response:
    """The indexed image's bytes (content type from its magic bytes) or a redirect."""
    return await image_answer(id, service)
