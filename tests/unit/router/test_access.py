"""The access gate's collection rule: a key restricted to some collections may search only
those; the old routes count as the default collection; admin routes are not about one."""

from __future__ import annotations

import pytest

from simsearch.common.apikeys import KeyRing, KeySource
from simsearch.common.errors import Forbidden, Unauthorized
from simsearch.router.access import AccessGate
from simsearch.router.auth import KeyCheck
from simsearch.router.clientip import TrustedProxies

RING = KeyRing.of(
    [
        ("open", "search"),
        ("cats-only", "search", frozenset({"cats"})),
        ("main-and-cats", "search", frozenset({"main", "cats"})),
        ("boss-of-cats", "admin", frozenset({"cats"})),
    ]
)


def gate() -> AccessGate:
    return AccessGate(KeyCheck(KeySource(RING)), None, TrustedProxies.parse(""), "main")


def check(key: str, route_class: str = "vector_search", collection: str | None = None) -> str:
    found = gate().check(route_class, {"x-api-key": key}, "10.0.0.1", None, collection)  # type: ignore[arg-type]
    assert found == key
    return found


@pytest.mark.parametrize("route_class", ["vector_search", "image_search", "images"])
def test_a_restricted_key_may_use_only_its_collections(route_class: str) -> None:
    check("cats-only", route_class, "cats")
    check("main-and-cats", route_class, "cats")
    check("main-and-cats", route_class)  # the old routes: the default collection, "main"
    check("open", route_class, "dogs")  # no restriction: every collection
    with pytest.raises(Forbidden) as err:
        check("cats-only", route_class, "dogs")
    assert err.value.reason == "the API key sent may not use collection 'dogs'; it may use: cats"
    with pytest.raises(Forbidden, match="collection 'main'"):
        check("cats-only", route_class)  # an old route is the default collection


def test_admin_routes_are_not_about_a_collection() -> None:
    check("boss-of-cats", "admin")
    with pytest.raises(Forbidden, match="collection 'dogs'"):
        check("boss-of-cats", "vector_search", "dogs")  # an admin key searches like others


def test_a_bad_key_is_401_before_any_collection_rule() -> None:
    with pytest.raises(Unauthorized):
        check("nobody", "vector_search", "cats")


def test_without_keys_every_collection_is_open() -> None:
    open_gate = AccessGate(KeyCheck(KeySource(KeyRing())), None, TrustedProxies.parse(""))
    assert open_gate.check("vector_search", {}, "10.0.0.1", None, "anything") is None
