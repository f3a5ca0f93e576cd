"""`POST /search/vector`, `POST /search/image`, `GET /search/similar/{id}`, and the fast path.

Thin: parse the request, call `RouterService`, shape the answer (`router/query.py`).
`POST /search/vector` is also served past FastAPI by `JsonFastPath` (`fast_vector_route`,
installed by `create_app`); both go through `vector_answer`, so the two cannot drift. The
declared route stays the documented contract and answers requests with a query string.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.types import Scope

from simsearch.common.api import BatchSearchResponse, SearchResponse, VectorQuery
from simsearch.common.apidoc import binary_part, error_responses, multipart_body
from simsearch.common.http import JsonHandler, read_file_parts
from simsearch.router.api.deps import ImageSearchGuard, ServiceDep, VectorGuard
from simsearch.router.api.params import IdPath, KQuery, NprobeQuery, RefineQuery, StrictQuery
from simsearch.router.query import answer_fields, to_hits
from simsearch.router.service import Knobs, RouterService, Searched

__all__ = ["fast_vector_route", "router", "vector_answer"]

router = APIRouter()

_VECTOR_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": VectorQuery.model_json_schema()}},
    }
}
_IMAGE_BODY = multipart_body(
    {"file": binary_part("The query image (JPEG, PNG, WebP, GIF, BMP, TIFF).")},
    description="One file part named `file` (with a filename); other parts are ignored.",
)


def respond(searched: Searched, request: Request) -> SearchResponse:
    """The answer to one query, with result URLs under the app's root path."""
    prefix = request.scope.get("root_path", "")
    fields = answer_fields(searched.result, searched.k, searched.took_ms)
    return SearchResponse(results=to_hits(searched.result.hits[0], prefix), **fields)


async def vector_answer(
    body: VectorQuery, request: Request, service: RouterService, strict: bool
) -> bytes:
    """`POST /search/vector`'s answer as JSON bytes (the route and its fast path share it)."""
    knobs = Knobs(body.k, body.nprobe, body.refine, strict)
    searched = await service.search_vectors(body.rows(), knobs)
    if body.vectors is None:
        answer: SearchResponse | BatchSearchResponse = respond(searched, request)
    else:
        prefix = request.scope.get("root_path", "")
        fields = answer_fields(searched.result, searched.k, searched.took_ms)
        hits = [to_hits(row, prefix) for row in searched.result.hits]
        answer = BatchSearchResponse(results=hits, **fields)
    return answer.model_dump_json().encode()


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


async def read_upload(request: Request) -> bytes:
    """The bytes of the one file part (`file`); 4xx with the uniform body for anything else."""
    parts = await read_file_parts(request, ("file",), max_files=1, max_fields=16)
    return parts[0]


@router.post(
    "/search/vector",
    response_model=SearchResponse | BatchSearchResponse,
    dependencies=[VectorGuard],
    openapi_extra=_VECTOR_BODY,
    responses=error_responses(400, 401, 413, 422, 429, 502, 503),
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
    openapi_extra=_IMAGE_BODY,
    responses=error_responses(400, 401, 413, 415, 422, 429, 502, 503),
)
async def search_image(
    request: Request,
    service: ServiceDep,
    k: KQuery = None,
    strict: StrictQuery = False,
    nprobe: NprobeQuery = None,
    refine: RefineQuery = None,
) -> SearchResponse:
    """Nearest images to an uploaded image (multipart part `file`)."""
    blob = await read_upload(request)
    searched = await service.search_image(blob, Knobs(k, nprobe, refine, strict))
    return respond(searched, request)


@router.get(
    "/search/similar/{id}",
    response_model=SearchResponse,
    dependencies=[VectorGuard],
    responses=error_responses(400, 401, 404, 422, 429, 502, 503),
)
async def search_similar(
    id: IdPath,
    request: Request,
    service: ServiceDep,
    k: KQuery = None,
    strict: StrictQuery = False,
    nprobe: NprobeQuery = None,
    refine: RefineQuery = None,
) -> SearchResponse:
    """Images similar to an indexed one. The image itself is kept: it ranks first (≈1.0)."""
    searched = await service.search_similar(id, Knobs(k, nprobe, refine, strict))
    return respond(searched, request)
