"""Every public route of the router has a client method, in both clients, with the same
parameters: checked against the router's own OpenAPI document (built in-process)."""

from __future__ import annotations

import inspect

import pytest

from simsearch.client import AsyncClient, Client
from simsearch.client.calls import ROUTES
from simsearch.common.settings import load_settings
from simsearch.router.app import create_app
from simsearch.router.settings import RouterSettings


def public_routes() -> set[tuple[str, str]]:
    document = create_app(load_settings(RouterSettings, shards="http://127.0.0.1:9")).openapi()
    return {(method.upper(), path) for path, ops in document["paths"].items() for method in ops}


def test_every_public_route_has_a_client_method() -> None:
    routes = public_routes()
    assert len(routes) >= 10
    covered = set(ROUTES.values())
    assert routes - covered == set(), "routes without a client method"
    assert covered - routes == set(), "client methods for routes the router does not have"


@pytest.mark.parametrize("name", [*ROUTES, "save_image"])
def test_both_clients_have_the_method_with_the_same_parameters(name: str) -> None:
    sync, aio = getattr(Client, name), getattr(AsyncClient, name)
    assert inspect.signature(sync).parameters.keys() == inspect.signature(aio).parameters.keys()
    assert inspect.iscoroutinefunction(aio) or inspect.isasyncgenfunction(aio)
    assert "request_id" in inspect.signature(sync).parameters
