"""The one access check of every guarded router route: rate limits and API keys, in order.

`AccessGate.check(route_class, headers, peer, forwarded_for)` is plain Python that takes
what an ASGI scope has, so a route served outside FastAPI (a fast path for
`/search/vector`) calls exactly what the FastAPI dependency `guard(route_class)` calls:

1. the client address (`router/clientip.py`: the peer, or `X-Forwarded-For` from a trusted
   proxy) is counted against the route class's per-address limit — before the key, so
   guessing keys is rate limited too;
2. the API key is checked for the route's scope and, on search and image routes, for the
   collection the request is about (`router/auth.py`: 401, 403);
3. the accepted key is counted against the per-key limit.

With limits off and no keys the check costs a dictionary look-up and a few attribute
reads; with both on, two bucket updates and the key comparisons (see docs/security.md
for the measured cost).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from fastapi import Request

from simsearch.router.auth import KeyCheck
from simsearch.router.clientip import TrustedProxies, bucket_of
from simsearch.router.metrics import RouterMetrics
from simsearch.router.ratelimit import RateLimiter, RouteClass
from simsearch.router.settings import RouterSettings

__all__ = ["AccessGate", "guard"]


class AccessGate:
    """Rate limits (optional) and the key check for every guarded route class."""

    def __init__(
        self,
        keys: KeyCheck,
        limiter: RateLimiter | None,
        proxies: TrustedProxies,
        default_collection: str = "default",
    ) -> None:
        self.keys = keys
        self.limiter = limiter
        self.proxies = proxies
        self.default_collection = default_collection  # what the old routes are about

    @classmethod
    def from_settings(cls, settings: RouterSettings, metrics: RouterMetrics) -> AccessGate:
        """The gate the settings describe; refusals are counted in the router's metrics."""

        def count(route_class: RouteClass, target: str) -> None:
            metrics.rate_limited.labels(route_class, target).inc()

        limiter = None
        if settings.rate_limits:
            limiter = RateLimiter(
                settings.rate_limit_table(), settings.rate_max_tracked, on_limited=count
            )
        proxies = TrustedProxies.parse(settings.trusted_proxies)
        return cls(KeyCheck(settings.key_source()), limiter, proxies, settings.index)

    def check(
        self,
        route_class: RouteClass,
        headers: Mapping[str, str],
        peer: str | None,
        forwarded_for: str | None = None,
        collection: str | None = None,
    ) -> str | None:
        """Admit one request or raise (429 `RateLimited`, 401 `Unauthorized`, 403
        `Forbidden`); returns the accepted API key (None with keys off).

        `headers` needs case-insensitive `get` (Starlette's `Headers`); `forwarded_for` is
        every `X-Forwarded-For` value joined with commas, in order (only read when trusted
        proxies are configured); `collection` is the one a collection route names (None:
        the default collection, for search and image routes).
        """
        client = self.proxies.client_address(peer, forwarded_for)
        limiter = self.limiter
        if limiter is not None:
            limiter.check(route_class, "address", bucket_of(client))
        if route_class != "admin" and collection is None:
            collection = self.default_collection
        key = self.keys.check(route_class, headers, client, collection)
        if limiter is not None and key is not None:
            limiter.check(route_class, "key", key)
        return key

    def check_request(
        self, route_class: RouteClass, request: Request, collection: str | None = None
    ) -> str | None:
        """`check` with what a Starlette request carries."""
        peer = request.client.host if request.client else None
        forwarded = None
        if self.proxies:
            forwarded = ",".join(request.headers.getlist("x-forwarded-for")) or None
        return self.check(route_class, request.headers, peer, forwarded, collection)


def guard(
    route_class: RouteClass, collection_param: str | None = None
) -> Callable[[Request], Awaitable[str | None]]:
    """The FastAPI dependency for one route class (a thin wrapper of `AccessGate.check`);
    with `collection_param`, the request is about the collection that path parameter names
    (`/collections/{name}/...`), else about the default one."""

    async def dependency(request: Request) -> str | None:
        gate: AccessGate = request.app.state.gate
        collection = request.path_params.get(collection_param) if collection_param else None
        return gate.check_request(route_class, request, collection)

    dependency.__name__ = f"guard_{route_class}" + ("_collection" if collection_param else "")
    return dependency
