"""What a client call raises: the router's error body as typed exceptions, never httpx's.

    ClientError                  base of everything a client method raises on purpose
    ├── ApiError                 the router (or the object store) answered with an error
    │   │                        status; `status`, `code`, `detail`, `request_id` from the body
    │   ├── BadRequest           400, 413, 415, 422: the request itself is refused
    │   │   └── InvalidFilter    400 `invalid_filter`: a field or type the collection lacks
    │   │       └── FilterTooLarge  400 `filter_too_large`: over the filter size limits
    │   ├── Unauthorized         401: an API key is needed, missing or wrong
    │   ├── Forbidden            403: the key's scope does not allow it (admin routes, a
    │   │                        collection the key is not given)
    │   ├── NotFound             404: unknown id (or route)
    │   │   └── CollectionNotFound  404 `collection_not_found`: no collection of that name
    │   ├── RateLimited          429: over a rate limit; `retry_after_s` from Retry-After
    │   ├── ServerError          500, 502 and other 5xx
    │   └── Unavailable          503: no shard or embedder now, or a partial answer with strict
    ├── ConnectionFailed         no HTTP answer at all: refused, reset, DNS, TLS
    │   └── TimedOut             a connect or read timeout, or the call's deadline
    └── UnexpectedResponse       an answer that is not what the route documents (a proxy page)

The `code` is the server's stable error code (`invalid_parameter`, `rate_limited`, ...),
kept as is: callers branch on it when the class is too coarse. A few (status, code)
pairs have a class of their own, under their status's class (`_BY_CODE`), so that
`except NotFound` still catches an unknown collection. An error answer that does
not carry the project's body (a proxy's page, the object store's XML) still gets its class
from the status; its code is then `http_<status>`. Any other 4xx is a plain `ApiError`.
This tree is the client's own and not `simsearch.common.errors` (the server's domain
tree): a client sees statuses and bodies, never the server's classes.
"""

from __future__ import annotations

import email.utils
import json
import time
from typing import Any

import httpx

__all__ = [
    "ApiError",
    "BadRequest",
    "ClientError",
    "CollectionNotFound",
    "ConnectionFailed",
    "FilterTooLarge",
    "Forbidden",
    "InvalidFilter",
    "NotFound",
    "RateLimited",
    "ServerError",
    "TimedOut",
    "Unauthorized",
    "Unavailable",
    "UnexpectedResponse",
    "error_from_response",
    "error_from_transport",
    "retry_after",
    "translate",
]


class ClientError(Exception):
    """Base of every error a client method raises on purpose."""


class ApiError(ClientError):
    """An error answer. `request_id` (body, else the X-Request-ID header) finds it in logs."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        request_id: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.request_id = request_id
        self.retry_after_s = retry_after_s


class BadRequest(ApiError):
    """400, 413, 415, 422: sending the same request again will not work."""


class InvalidFilter(BadRequest):
    """400 `invalid_filter`: the filter names a field the collection's metadata lacks, or
    a value or operator its type does not take; `detail` says which."""


class FilterTooLarge(InvalidFilter):
    """400 `filter_too_large`: over the limits (nodes, depth, `in` values, string length)."""


class Unauthorized(ApiError):
    """401: the router wants an API key (`api_key=`) and got none or a wrong one."""


class Forbidden(ApiError):
    """403: the key may not do this (a search key on `/admin/reload`, a key restricted to
    other collections)."""


class NotFound(ApiError):
    """404: the id is not indexed, or its image object is gone."""


class CollectionNotFound(NotFound):
    """404 `collection_not_found`: no healthy shard serves a collection of that name."""


class RateLimited(ApiError):
    """429: over a rate limit; `retry_after_s` is the server's Retry-After."""


class ServerError(ApiError):
    """500, 502 and any 5xx without a class of its own."""


class Unavailable(ApiError):
    """503: the cluster cannot answer now (no shard, no embedder, strict and partial)."""


class ConnectionFailed(ClientError):
    """No HTTP answer came: the router is down, unreachable, or reset the connection."""


class TimedOut(ConnectionFailed):
    """A connect or read timeout, or the call's overall deadline ran out."""


class UnexpectedResponse(ClientError):
    """A success status with a body that is not the route's model (a proxy, a wrong URL)."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    413: BadRequest,
    415: BadRequest,
    422: BadRequest,
    429: RateLimited,
    503: Unavailable,
}
# (status, code) -> a class finer than its status's (a subclass of it)
_BY_CODE: dict[tuple[int, str], type[ApiError]] = {
    (400, "invalid_filter"): InvalidFilter,
    (400, "filter_too_large"): FilterTooLarge,
    (404, "collection_not_found"): CollectionNotFound,
}


def error_from_response(response: httpx.Response) -> ApiError:
    """The typed error for an error answer whose body has been read."""
    status = response.status_code
    body = _error_body(response)
    code = body.get("error") if isinstance(body.get("error"), str) else None
    cls = _BY_CODE.get((status, code or "")) or _BY_STATUS.get(
        status, ServerError if status >= 500 else ApiError
    )
    detail = body.get("detail")
    request_id = body.get("request_id") or response.headers.get("x-request-id")
    return cls(
        status,
        code or f"http_{status}",
        detail if isinstance(detail, str) else _text(response),
        str(request_id) if request_id else None,
        retry_after(response.headers.get("retry-after")),
    )


def error_from_transport(exc: httpx.TransportError) -> ConnectionFailed:
    """httpx's transport failure as the client's own class (timeouts told apart)."""
    if isinstance(exc, httpx.TimeoutException):
        return TimedOut(f"timed out: {type(exc).__name__} {exc}".strip())
    return ConnectionFailed(f"no answer: {type(exc).__name__} {exc}".strip())


def translate(exc: httpx.HTTPError) -> ClientError:
    """Any httpx error as the client's own: no answer, or an answer that would not decode."""
    if isinstance(exc, httpx.TransportError):
        return error_from_transport(exc)
    return UnexpectedResponse(f"unreadable answer: {type(exc).__name__} {exc}".strip())


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date; None if absent."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def _error_body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = json.loads(response.content)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _text(response: httpx.Response) -> str:
    text = response.content[:300].decode("utf-8", errors="replace").strip()
    return text or response.reason_phrase or f"HTTP {response.status_code}"
