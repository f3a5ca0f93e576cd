"""The OpenAPI documents of the three services declare the error body they really send.

Regression tests for what schemathesis found (issue #12): FastAPI's default 422 schema
(`detail` an array) where every service sends `ErrorBody` (`detail` a string), error codes
the routes give but did not document, and the multipart uploads, read by hand, missing
from the schema. The apps are built in-process; no lifespan runs (nothing is loaded).
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI

from simsearch.common import api
from simsearch.common.apidoc import IMAGE_MEDIA_TYPES, ErrorBody
from simsearch.common.settings import load_settings
from simsearch.embedder.app import create_app as embedder_app
from simsearch.embedder.settings import EmbedderSettings
from simsearch.router.app import create_app as router_app
from simsearch.router.settings import RouterSettings
from simsearch.shard.app import create_app as shard_app
from simsearch.shard.settings import ShardSettings
from tests.unit.common.test_http_edge import call, make_app

ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
# health answers keep their own body when unhealthy / not ready (a status, not an error)
HEALTH_503 = {("/health", "503"), ("/health/ready", "503")}


def apps(tmp_path: Any) -> dict[str, FastAPI]:
    return {
        "router": router_app(load_settings(RouterSettings, shards="http://127.0.0.1:9")),
        "shard": shard_app(ShardSettings(store=str(tmp_path), shard_ordinal=0, cache_dir=tmp_path)),
        "embedder": embedder_app(load_settings(EmbedderSettings, weights="random")),
    }


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, op)
        for path, methods in document["paths"].items()
        for method, op in methods.items()
    ]


def error_schema(op: dict[str, Any], code: str) -> Any:
    return op["responses"][code]["content"]["application/json"]["schema"]


@pytest.mark.parametrize("service", ["router", "shard", "embedder"])
def test_every_error_is_documented_as_error_body(service: str, tmp_path: Any) -> None:
    document = apps(tmp_path)[service].openapi()
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    assert schemas["ErrorBody"]["properties"]["detail"]["type"] == "string"
    for path, method, op in operations(document):
        assert error_schema(op, "500") == ERROR_REF, (path, method)
        if op.get("parameters") or "requestBody" in op:
            assert error_schema(op, "422") == ERROR_REF, (path, method)
        if "requestBody" in op:
            assert error_schema(op, "413") == ERROR_REF, (path, method)
        for code in op["responses"]:
            if code.startswith(("4", "5")) and (path, code) not in HEALTH_503:
                assert error_schema(op, code) == ERROR_REF, (path, method, code)


@pytest.mark.parametrize(
    ("service", "path", "method", "codes"),
    [
        ("router", "/search/vector", "post", {"400", "401", "413", "422", "502", "503"}),
        ("router", "/search/image", "post", {"400", "401", "413", "415", "422", "502", "503"}),
        ("router", "/search/similar/{id}", "get", {"400", "401", "404", "422", "502", "503"}),
        ("router", "/images/{id}", "get", {"401", "404", "413", "422", "503"}),
        ("router", "/admin/reload", "post", {"401", "422"}),
        ("shard", "/search", "post", {"400", "404", "409", "413", "422"}),
        ("shard", "/items/{item_id}", "get", {"400", "404", "409", "422"}),
        ("embedder", "/embed", "post", {"400", "413", "415", "422", "503"}),
        ("embedder", "/embed/keys", "post", {"400", "413", "422", "503"}),
    ],
)
def test_routes_document_the_codes_they_give(
    service: str, path: str, method: str, codes: set[str], tmp_path: Any
) -> None:
    responses = apps(tmp_path)[service].openapi()["paths"][path][method]["responses"]
    assert codes <= set(responses), sorted(responses)


@pytest.mark.parametrize(("service", "path"), [("router", "/search/image"), ("embedder", "/embed")])
def test_uploads_declare_a_multipart_file_part(service: str, path: str, tmp_path: Any) -> None:
    body = apps(tmp_path)[service].openapi()["paths"][path]["post"]["requestBody"]
    multipart = body["content"]["multipart/form-data"]
    assert body["required"] and multipart["schema"]["required"] == ["file"]
    assert multipart["schema"]["properties"]["file"]["format"] == "binary"
    assert multipart["encoding"]["file"]["contentType"] == IMAGE_MEDIA_TYPES


def test_health_ready_and_metrics_document_their_bodies(tmp_path: Any) -> None:
    paths = apps(tmp_path)["router"].openapi()["paths"]
    ready = paths["/health/ready"]["get"]["responses"]
    assert ready["503"]["content"]["application/json"]["schema"]["$ref"].endswith("ReadyBody")
    assert "text/plain" in paths["/metrics"]["get"]["responses"]["200"]["content"]


def test_the_vector_body_schema_says_exactly_one_of_vector_or_vectors(tmp_path: Any) -> None:
    paths = apps(tmp_path)["router"].openapi()["paths"]
    schema = paths["/search/vector"]["post"]["requestBody"]["content"]["application/json"]
    branches = schema["schema"]["oneOf"]
    assert [b["required"] for b in branches] == [["vector"], ["vectors"]]
    assert schema["schema"]["properties"]["k"]["minimum"] == 1


def test_a_validation_error_body_is_an_error_body() -> None:
    response = call(make_app(), "GET", "/items/notanumber")
    assert response.status_code == 422
    assert ErrorBody.model_validate(response.json()).error == "validation_error"


def test_the_shared_bodies_keep_their_names_in_the_router_document(tmp_path: Any) -> None:
    """The public bodies moved from `router/schemas.py` to `common/api.py` (shared with the
    client): their component names and titles are the class names, not module paths."""
    schemas = apps(tmp_path)["router"].openapi()["components"]["schemas"]
    shared = [name for name in api.__all__ if name in schemas]
    assert {"SearchResponse", "BatchSearchResponse", "StatsResponse", "ReloadResponse"} <= set(
        shared
    )
    for name in shared:
        assert schemas[name]["title"] == name
