"""Which key each router route class needs, and what happens when no key is configured.

Search routes (`vector_search`, `image_search`, `images`) need a search or admin key when
keys are on, and one allowed on the collection the request is about (a key file line may
restrict its key to some collections; the old routes are about the default collection);
`admin` routes need an admin key (a search key gets 403). The key logic
itself (scopes, key file, constant-time match) is `simsearch.common.apikeys`, shared with
the shards.

With no key configured at all, search stays open (the local demo and the page just work)
but admin routes answer only to loopback clients: `/admin/reload` makes every shard hit
the object store, and a cluster deployed without keys should not offer that to the
internet. From the router's own host, or through `kubectl port-forward` (which connects
from 127.0.0.1 inside the pod), it still works. "Loopback" is the client address after
`X-Forwarded-For` handling, so a trusted proxy on the same host does not open it.
"""

from __future__ import annotations

from collections.abc import Mapping

from simsearch.common.apikeys import KeySource, Scope, authorize
from simsearch.common.errors import Forbidden
from simsearch.router.clientip import is_loopback
from simsearch.router.ratelimit import RouteClass

__all__ = ["ROUTE_SCOPES", "KeyCheck"]

ROUTE_SCOPES: dict[RouteClass, Scope] = {
    "vector_search": "search",
    "image_search": "search",
    "images": "search",
    "admin": "admin",
}


class KeyCheck:
    """The router's key check: `check(route_class, headers, client)` → the key or None."""

    def __init__(self, source: KeySource) -> None:
        self.source = source

    @property
    def enabled(self) -> bool:
        """Whether keys are on (any of SIMSEARCH_API_KEYS, _ADMIN_KEYS, _API_KEYS_FILE)."""
        return self.source.enabled

    def check(
        self,
        route_class: RouteClass,
        headers: Mapping[str, str],
        client: str,
        collection: str | None = None,
    ) -> str | None:
        """The key that was accepted (None with keys off); raises 401 or 403.

        `collection`: what a search or image request is about (None for admin routes)."""
        need = ROUTE_SCOPES[route_class]
        if need == "admin" and not self.source.enabled and not is_loopback(client):
            raise Forbidden(
                "no API keys are configured, so admin routes answer only to loopback clients "
                "(the router's host, kubectl port-forward); set SIMSEARCH_ADMIN_KEYS or "
                "SIMSEARCH_API_KEYS_FILE to call them from elsewhere"
            )
        return authorize(self.source, headers, need, collection)
