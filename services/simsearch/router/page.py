"""The search page served at `/` and its assets at `/static/{name}`.

Plain files shipped in the package (`router/static/`: `index.html`, `app.js`, `app.css`;
package data in pyproject), read once with importlib.resources: no build step, no Node, no
external assets or CDNs. The page calls the same public API a program would
(`GET /collections`, then `POST /collections/{name}/search/image`,
`GET /collections/{name}/search/similar/{id}` and the hits' own image URLs; `GET /stats`,
`GET /health`) with relative URLs, so it also works behind a path prefix. Its collection
picker shows only when there are several; a router that lists none is searched through
the routes without a collection (`/search/image`…), as before collections.

The one thing rendered per request is whether the router needs an API key
(`data-api-key` on `<html>`), so the page shows its key field before the first search
instead of probing the API; the key itself never leaves the browser except in the
`X-API-Key` header of the page's own requests.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from simsearch.common.errors import NotFound

__all__ = ["ASSETS", "CSP", "PAGE_HEADERS", "asset", "render_page"]

# name → media type: the only files `/static/{name}` serves (no path is ever joined).
ASSETS: dict[str, str] = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}

# Everything from this origin; thumbnails may be blob: URLs (fetched with the API key)
# or a presigned object-store URL the router redirects to.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' blob: data: https: http:; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_KEY_MARK = 'data-api-key="optional"'


@cache
def _read(name: str) -> bytes:
    return resources.files("simsearch.router").joinpath("static", name).read_bytes()


def render_page(needs_key: bool) -> str:
    """index.html, marked `data-api-key="required"` when the router checks API keys."""
    html = _read("index.html").decode("utf-8")
    return html.replace(_KEY_MARK, 'data-api-key="required"') if needs_key else html


def asset(name: str) -> tuple[bytes, str]:
    """The bytes and media type of one static asset; NotFound (404) for any other name."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"no static file {name!r}")
    return _read(name), media_type
