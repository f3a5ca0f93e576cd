"""`GET /images/{id}`: an indexed image's bytes, or a redirect to a presigned URL."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

from simsearch.common.apidoc import error_responses
from simsearch.router.api.deps import ImagesGuard, ServiceDep
from simsearch.router.api.params import IdPath

__all__ = ["router"]

router = APIRouter()

_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=300"}


@router.get(
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
    return Response(reply.data, media_type=reply.media_type, headers=_HEADERS)
