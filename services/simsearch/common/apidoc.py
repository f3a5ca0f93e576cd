"""The error half of every service's OpenAPI contract, declared once.

Every 4xx/5xx answer of every service has one body, `ErrorBody` (built by
`simsearch.common.http`); FastAPI's generated schema would instead promise its own
`HTTPValidationError` (`detail` an array) for 422 and nothing for the other codes. So:

* routes declare the codes they can give with `error_responses(400, 404, ...)`;
* `install_openapi(app)` (called by `install_error_handlers`, so all three services get
  it) rewrites the generated document once: FastAPI's default 422 becomes `ErrorBody`,
  every operation gets a 500 (a bug: the body names the request id to look up), and
  every operation with a request body gets a 413 (the edge's byte limit applies to all).

Multipart uploads are read by hand (the handlers stream the parts themselves), so their
request bodies are declared here too, with `multipart_body`, for `openapi_extra=`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel, Field

__all__ = [
    "IMAGE_MEDIA_TYPES",
    "ErrorBody",
    "ReadyBody",
    "binary_part",
    "error_responses",
    "install_openapi",
    "multipart_body",
    "uniform_errors",
]

_REF = "#/components/schemas/"
# What a file part may hold. The format is read from the bytes, never from this header
# (see `simsearch.common.imaging.sniff_format`); listing them tells clients and fuzzers
# which files are meant.
IMAGE_MEDIA_TYPES = "image/jpeg, image/png, image/webp, image/gif, image/bmp, image/tiff"


class ErrorBody(BaseModel):
    """The body of every error answer (4xx and 5xx) of every simsearch service."""

    status: Literal["error"] = Field(description='Always "error".')
    error: str = Field(description="A stable code: corrupt_image, validation_error, ...")
    detail: str = Field(description="Why, for a person: names the field or limit at fault.")
    request_id: str = Field(description="Also in the X-Request-ID header and the logs.")


class ReadyBody(BaseModel):
    """`/health/ready`: 200 with status "ready", 503 with "not_ready" and the reason."""

    status: Literal["ready", "not_ready"]
    detail: str


_DESCRIPTIONS: dict[int, str] = {
    400: "Bad input: a parameter out of range, a bad vector, an undecodable image, a "
    "malformed body (the detail says which).",
    401: "An API key is required (keys are configured) and missing or wrong.",
    403: "Not allowed: a search key on an admin route, admin from a non-loopback client "
    "with no keys configured, a key restricted to other collections, or a reference "
    "outside the embedder's allowed roots.",
    404: "The id, object, collection or route does not exist.",
    409: "Not served here now (version or partitions not loaded); another replica may.",
    413: "Over a byte or pixel limit (the request body, an image, a stored object).",
    415: "Not a content type or image format this route decodes.",
    422: "The request does not match this schema (the detail names each field).",
    429: "Too many requests; retry after the Retry-After header's seconds.",
    500: "A bug: the detail gives no internals; look the request id up in the logs.",
    502: "Another service answered with something unusable.",
    503: "Cannot answer now (no shard, embedder or object store; a full queue; a partial "
    "answer with strict=true); retry later.",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each code answered with `ErrorBody`."""
    return {code: {"model": ErrorBody, "description": _DESCRIPTIONS[code]} for code in codes}


def multipart_body(properties: dict[str, dict[str, Any]], *, description: str) -> dict[str, Any]:
    """`openapi_extra=` declaring a multipart/form-data body of image file parts.

    Every property is required: the handlers refuse a request without one with 400
    `empty_input`. (Not `anyOf` of alternatives: fuzzers mutate one branch of it and call
    the still-valid result invalid.)
    """
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "description": description,
    }
    encoding = {name: {"contentType": IMAGE_MEDIA_TYPES} for name in properties}
    return {
        "requestBody": {
            "required": True,
            "content": {"multipart/form-data": {"schema": schema, "encoding": encoding}},
        }
    }


def binary_part(description: str) -> dict[str, Any]:
    """One file part's schema (bytes of an image)."""
    return {"type": "string", "format": "binary", "description": description}


def install_openapi(app: FastAPI) -> None:
    """Make `app.openapi()` return the document with the uniform error contract."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = uniform_errors(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def uniform_errors(document: dict[str, Any]) -> dict[str, Any]:
    """Rewrite a generated OpenAPI document in place (see the module docstring)."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("ErrorBody", ErrorBody.model_json_schema(ref_template=_REF + "{model}"))
    for methods in document.get("paths", {}).values():
        for operation in methods.values():
            _uniform_operation(operation)
    schemas.pop("HTTPValidationError", None)  # FastAPI's 422 body, which we never send
    schemas.pop("ValidationError", None)
    return document


def _uniform_operation(operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    if "422" in responses and "HTTPValidationError" in str(responses["422"]):
        responses["422"] = _error_response(422)
    if "requestBody" in operation:
        responses.setdefault("413", _error_response(413))
    responses.setdefault("500", _error_response(500))


def _error_response(code: int) -> dict[str, Any]:
    return {
        "description": _DESCRIPTIONS[code],
        "content": {"application/json": {"schema": {"$ref": _REF + "ErrorBody"}}},
    }
