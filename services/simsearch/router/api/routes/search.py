"""`POST /search/vector`, `POST /search/image`, `GET /search/similar/{id}`, and the fast path.

Thin: parse the request, call `RouterService`, shape the answer (`router/query.py`).
`POST /search/vector` is also served past FastAPI by `JsonFastPath` (`fast_vector_route`,
installed by `create_app`); both go through `vector_answer`, so the two cannot drift. The
declared route stays the documented contract and answers requests with a query string.

These routes search the default collection. The collection routes
(`api/routes/collections.py`) call the same answer functions (`vector_answer`,
`image_search_answer`, `similar_answer`) with the collection they name.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.types import Scope

from simsearch.common.api import BatchSearchResponse, SearchResponse, VectorQuery
from simsearch.common.apidoc import binary_part, error_responses, multipart_body
from simsearch.common.errors import InvalidFilter
from simsearch.common.filters import Filter
from simsearch.common.http import JsonHandler, read_file_parts
from simsearch.router.api.deps import ImageSearchGuard, ServiceDep, VectorGuard
from simsearch.router.api.params import (
    FilterQuery,
    IdPath,
    KQuery,
    NprobeQuery,
    RefineQuery,
    StrictQuery,
)
from simsearch.router.query import answer_fields, hit_prefix, parse_filter, to_hits
from simsearch.router.service import Knobs, RouterService, Searched

__all__ = [
    "IMAGE_BODY",
    "SCHEMAS",
    "VECTOR_BODY",
    "fast_vector_route",
    "image_search_answer",
    "parse_vector_query",
    "router",
    "similar_answer",
    "vector_answer",
]

router = APIRouter()

# The body's schema refers to the filter's node models (Eq, And, ...) as components of the
# document: `create_app` adds `SCHEMAS` there (a `#/$defs/...` reference would dangle).
_VECTOR_SCHEMA = VectorQuery.model_json_schema(ref_template="#/components/schemas/{model}")
SCHEMAS: dict[str, Any] = _VECTOR_SCHEMA.pop("$defs", {})
VECTOR_BODY = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": _VECTOR_SCHEMA}}}
}


def _image_body() -> dict[str, Any]:
    """The multipart body: the `file` part (required) and the optional `filter` field."""
    body = multipart_body(
        {"file": binary_part("The query image (JPEG, PNG, WebP, GIF, BMP, TIFF).")},
        description="One file part named `file` (with a filename) and, optionally, a form "
        "field `filter` (a filter as a JSON string, docs/filters.md); other parts are ignored.",
    )
    schema = body["requestBody"]["content"]["multipart/form-data"]["schema"]
    schema["properties"]["filter"] = {
        "type": "string",
        "description": "A filter as a JSON string (docs/filters.md).",
    }
    return body


IMAGE_BODY = _image_body()


def respond(searched: Searched, request: Request, collection: str | None) -> SearchResponse:
    """The answer to one query, with result URLs under the app's root path (and under the
    collection's routes for a collection search)."""
    prefix = hit_prefix(request.scope.get("root_path", ""), collection)
    fields = answer_fields(searched.result, searched.k, searched.took_ms)
    return SearchResponse(results=to_hits(searched.result.hits[0], prefix), **fields)


async def vector_answer(
    body: VectorQuery,
    request: Request,
    service: RouterService,
    strict: bool,
    collection: str | None = None,
) -> bytes:
    """`POST /search/vector`'s answer as JSON bytes (the route and its fast path share it;
    `collection` None: the default collection)."""
    knobs = Knobs(body.k, body.nprobe, body.refine, strict, body.filter)
    searched = await service.search_vectors(body.rows(), knobs, collection)
    if body.vectors is None:
        answer: SearchResponse | BatchSearchResponse = respond(searched, request, collection)
    else:
        prefix = hit_prefix(request.scope.get("root_path", ""), collection)
        fields = answer_fields(searched.result, searched.k, searched.took_ms)
        hits = [to_hits(row, prefix) for row in searched.result.hits]
        answer = BatchSearchResponse(results=hits, **fields)
    return answer.model_dump_json().encode()


async def image_search_answer(
    request: Request, service: RouterService, knobs: Knobs, collection: str | None = None
) -> SearchResponse:
    """`POST /search/image`'s answer: the upload (and its `filter` field) searched."""
    blob, filter_ = await read_upload(request)
    searched = await service.search_image(blob, replace_filter(knobs, filter_), collection)
    return respond(searched, request, collection)


async def similar_answer(
    id_: int,
    request: Request,
    service: RouterService,
    knobs: Knobs,
    filter_text: str | None,
    collection: str | None = None,
) -> SearchResponse:
    """`GET /search/similar/{id}`'s answer (`filter_text`: the `filter` query parameter)."""
    filter_ = parse_filter(filter_text, "the query parameter 'filter'")
    searched = await service.search_similar(id_, replace_filter(knobs, filter_), collection)
    return respond(searched, request, collection)


def replace_filter(knobs: Knobs, filter_: Filter | None) -> Knobs:
    """`knobs` with the filter a request's string field carried."""
    return knobs if filter_ is None else replace(knobs, filter=filter_)


def fast_vector_route() -> JsonHandler:
    """`POST /search/vector` without FastAPI's routing layers (see `JsonFastPath`).

    Its CPU per query sets the router's throughput; FastAPI's routing, dependency and
    exception layers were ~0.2 ms of it. Same checks as the declared route, in order:
    the access gate (rate limits and key), then the body (a query string, `?strict=`,
    takes the declared route).
    """

    async def fast_vector(body: bytes, scope: Scope) -> bytes:
        request = Request(scope)
        request.app.state.gate.check_request("vector_search", request)  # limits, then key
        query = VectorQuery.model_validate_json(body)
        return await vector_answer(query, request, request.app.state.service, False)

    return fast_vector


async def parse_vector_query(request: Request) -> VectorQuery:
    """The body of `/search/vector`, parsed and validated in one pass by pydantic-core.

    FastAPI's own body handling decodes the JSON with the standard library into Python
    lists and then validates those: for a 1280-d vector that was a fifth of the router's
    CPU per query. Errors keep the shape of FastAPI's (a 422 naming `body.<field>`).
    """
    raw = await request.body()
    try:
        return VectorQuery.model_validate_json(raw)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


async def read_upload(request: Request) -> tuple[bytes, Filter | None]:
    """The bytes of the one file part (`file`) and the `filter` form field, if any; 4xx
    with the uniform body for anything else."""
    parts = await read_file_parts(request, ("file",), max_files=1, max_fields=16)
    # `read_file_parts` parsed the whole form; Starlette keeps it on the request, so this
    # reads the parsed fields again (the file parts are closed, the text fields are not)
    field = (await request.form()).get("filter")
    if isinstance(field, UploadFile):
        raise InvalidFilter("the form field 'filter' must be a plain field (a JSON string)")
    return parts[0], parse_filter(field, "the form field 'filter'")


@router.post(
    "/search/vector",
    response_model=SearchResponse | BatchSearchResponse,
    dependencies=[VectorGuard],
    openapi_extra=VECTOR_BODY,
    responses=error_responses(400, 401, 403, 413, 422, 429, 502, 503),
)
async def search_vector(
    body: Annotated[VectorQuery, Depends(parse_vector_query)],
    request: Request,
    service: ServiceDep,
    strict: StrictQuery = False,
) -> Response:
    """Nearest images to a vector (cosine; normalised here). `vectors` → one list each.

    Serialised here, once: returning the model would make FastAPI validate it again
    against the response union (measured: ~0.3 ms of a query's CPU).
    """
    answer = await vector_answer(body, request, service, strict)
    return Response(answer, media_type="application/json")


@router.post(
    "/search/image",
    response_model=SearchResponse,
    dependencies=[ImageSearchGuard],
    openapi_extra=IMAGE_BODY,
    responses=error_responses(400, 401, 403, 413, 415, 422, 429, 502, 503),
)
async def search_image(
    request: Request,
    service: ServiceDep,
    k: KQuery = None,
    strict: StrictQuery = False,
    nprobe: NprobeQuery = None,
    refine: RefineQuery = None,
) -> SearchResponse:
    """Nearest images to an uploaded image (multipart part `file`, optional field `filter`)."""
    return await image_search_answer(request, service, Knobs(k, nprobe, refine, strict))


@router.get(
    "/search/similar/{id}",
    response_model=SearchResponse,
    dependencies=[VectorGuard],
    responses=error_responses(400, 401, 403, 404, 422, 429, 502, 503),
)
async def search_similar(
    id: IdPath,
    request: Request,
    service: ServiceDep,
    k: KQuery = None,
    strict: StrictQuery = False,
    nprobe: NprobeQuery = None,
    refine: RefineQuery = None,
    filter: FilterQuery = None,
) -> SearchResponse:
    """Images similar to an indexed one. The image itself is kept: it ranks first (≈1.0)
    (unless a filter leaves it out)."""
    knobs = Knobs(k, nprobe, refine, strict)
    return await similar_answer(id, request, service, knobs, filter)
