"""Every public route of the router has a client method, in both clients, with the same
parameters: checked against the router's own OpenAPI document (built in-process).

The client's side is `ROUTES` (a method, the route it calls) plus `IN_COLLECTION` (the
same method given `collection=`: its `/collections/{name}` route). `EXPECTED` is the list
of public routes written out, so that a route dropped on either side names itself.
"""

from __future__ import annotations

import inspect
from functools import cache

import pytest

from simsearch.client import AsyncClient, Client
from simsearch.client.calls import IN_COLLECTION, ROUTES
from simsearch.common.settings import load_settings
from simsearch.router.app import create_app
from simsearch.router.settings import RouterSettings

EXPECTED = {
    ("GET", "/health"),
    ("GET", "/health/live"),
    ("GET", "/health/ready"),
    ("GET", "/stats"),
    ("GET", "/metrics"),
    ("POST", "/search/vector"),
    ("POST", "/search/image"),
    ("GET", "/search/similar/{id}"),
    ("GET", "/images/{id}"),
    ("POST", "/admin/reload"),
}
EXPECTED_COLLECTIONS = {
    ("GET", "/collections"),
    ("GET", "/collections/{name}"),
    ("POST", "/collections/{name}/search/vector"),
    ("POST", "/collections/{name}/search/image"),
    ("GET", "/collections/{name}/search/similar/{id}"),
    ("GET", "/collections/{name}/images/{id}"),
}
SEARCHES = ("search_vector", "search_image", "search_similar")


@cache
def public_routes() -> frozenset[tuple[str, str]]:
    document = create_app(load_settings(RouterSettings, shards="http://127.0.0.1:9")).openapi()
    return frozenset(
        (method.upper(), path) for path, ops in document["paths"].items() for method in ops
    )


def client_routes() -> set[tuple[str, str]]:
    return set(ROUTES.values()) | set(IN_COLLECTION.values())


def test_the_client_calls_exactly_the_expected_routes() -> None:
    assert client_routes() == EXPECTED | EXPECTED_COLLECTIONS
    assert set(IN_COLLECTION) <= set(ROUTES), "a collection route without its default route"


def test_every_public_route_has_a_client_method() -> None:
    routes = public_routes()
    old = {route for route in routes if not route[1].startswith("/collections")}
    assert old == EXPECTED, "routes outside /collections: the router and the list disagree"


def test_every_collection_route_has_a_client_method() -> None:
    """The router's routes are exactly the client's, the collection routes included."""
    routes = public_routes()
    assert routes - client_routes() == set(), "routes without a client method"
    assert client_routes() - routes == set(), "client methods for routes the router lacks"


@pytest.mark.parametrize("name", [*ROUTES, "save_image"])
def test_both_clients_have_the_method_with_the_same_parameters(name: str) -> None:
    sync, aio = getattr(Client, name), getattr(AsyncClient, name)
    assert inspect.signature(sync).parameters.keys() == inspect.signature(aio).parameters.keys()
    assert inspect.iscoroutinefunction(aio) or inspect.isasyncgenfunction(aio)
    assert "request_id" in inspect.signature(sync).parameters


@pytest.mark.parametrize("name", [*IN_COLLECTION, "save_image"])
def test_a_method_with_a_collection_route_takes_collection(name: str) -> None:
    parameters = inspect.signature(getattr(Client, name)).parameters
    assert parameters["collection"].default is None
    assert parameters["collection"].kind is inspect.Parameter.KEYWORD_ONLY
    if name in SEARCHES:
        assert parameters["filter"].default is None
