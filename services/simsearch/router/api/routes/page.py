"""`GET /` (the search page) and `GET /static/{name}` (its assets): not in the OpenAPI schema."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from simsearch.router.page import PAGE_HEADERS, asset, render_page

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
async def page(request: Request) -> HTMLResponse:
    """The search page: upload an image, see similar ones (see router/page.py)."""
    html = render_page(needs_key=request.app.state.gate.keys.enabled)
    return HTMLResponse(html, headers=PAGE_HEADERS)


@router.get("/static/{name}")
async def static(name: str) -> Response:
    """The page's script and style sheet (shipped in the package: router/static/)."""
    data, media_type = asset(name)
    return Response(data, media_type=media_type, headers=PAGE_HEADERS)
