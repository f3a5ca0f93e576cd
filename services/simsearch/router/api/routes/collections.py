"""`/collections`: the named indexes the shards serve, and the search routes of each one.

`GET /collections` and `GET /collections/{name}` describe them (`router/catalog.py`);
`/collections/{name}/search/{vector,image,similar/{id}}` and `/collections/{name}/images/{id}`
are the routes without the prefix, on that collection: the same bodies, parameters and
answers (they call the same answer functions), and hit URLs that point back at
`/collections/{name}/images/{id}`. The guards check the key against `{name}`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from simsearch.common.api import (
    BatchSearchResponse,
    CollectionDetail,
    CollectionList,
    SearchResponse,
    VectorQuery,
)
from simsearch.common.apidoc import error_responses
from simsearch.router import catalog
from simsearch.router.api.deps import (
    CollectionImageSearchGuard,
    CollectionImagesGuard,
    CollectionVectorGuard,
    ServiceDep,
)
from simsearch.router.api.params import (
    CollectionPath,
    FilterQuery,
    IdPath,
    KQuery,
    NprobeQuery,
    RefineQuery,
    StrictQuery,
)
from simsearch.router.api.routes.images import IMAGE_RESPONSES, image_answer
from simsearch.router.api.routes.search import (
    IMAGE_BODY,
    VECTOR_BODY,
    image_search_answer,
    parse_vector_query,
    similar_answer,
    vector_answer,
)
from simsearch.router.service import Knobs

__all__ = ["router"]

router = APIRouter()


@router.get("/collections", response_model=CollectionList)
async def collections(service: ServiceDep) -> CollectionList:
    """Every collection a shard that is up serves, with the version its queries use."""
    states = service.registry.states.values()
    return catalog.listing(states, service.settings.index)


@router.get("/collections/{name}", response_model=CollectionDetail, responses=error_responses(404))
async def collection(name: CollectionPath, service: ServiceDep) -> CollectionDetail:
    """One collection: its summary and every version the shards hold (404: unknown)."""
    states = service.registry.states.values()
    return catalog.detail(states, name, service.settings.index)


@router.post(
    "/collections/{name}/search/vector",
    response_model=SearchResponse | BatchSearchResponse,
    dependencies=[CollectionVectorGuard],
    openapi_extra=VECTOR_BODY,
    responses=error_responses(400, 401, 403, 404, 413, 422, 429, 502, 503),
)
async def search_vector(
    name: CollectionPath,
    body: Annotated[VectorQuery, Depends(parse_vector_query)],
    request: Request,
    service: ServiceDep,
    strict: StrictQuery = False,
) -> Response:
    """`POST /search/vector` on collection `name`."""
    answer = await vector_answer(body, request, service, strict, name)
    return Response(answer, media_type="application/json")


@router.post(
    "/collections/{name}/search/image",
    response_model=SearchResponse,
    dependencies=[CollectionImageSearchGuard],
    openapi_extra=IMAGE_BODY,
    responses=error_responses(400, 401, 403, 404, 413, 415, 422, 429, 502, 503),
)
async def search_image(
    name: CollectionPath,
    request: Request,
    service: ServiceDep,
    k: KQuery = None,
    strict: StrictQuery = False,
    nprobe: NprobeQuery = None,
    refine: RefineQuery = None,
) -> SearchResponse:
    """`POST /search/image` on collection `name`."""
    return await image_search_answer(request, service, Knobs(k, nprobe, refine, strict), name)


@router.get(
    "/collections/{name}/search/similar/{id}",
    response_model=SearchResponse,
    dependencies=[CollectionVectorGuard],
    responses=error_responses(400, 401, 403, 404, 422, 429, 502, 503),
)
async def search_similar(
    name: CollectionPath,
    id: IdPath,
    request: Request,
    service: ServiceDep,
    k: KQuery = None,
    strict: StrictQuery = False,
    nprobe: NprobeQuery = None,
    refine: RefineQuery = None,
    filter: FilterQuery = None,
) -> SearchResponse:
    """`GET /search/similar/{id}` on collection `name`."""
    knobs = Knobs(k, nprobe, refine, strict)
    return await similar_answer(id, request, service, knobs, filter, name)


@router.get(
    "/collections/{name}/images/{id}",
    dependencies=[CollectionImagesGuard],
    response_class=Response,
    responses=IMAGE_RESPONSES,
)
async def image(name: CollectionPath, id: IdPath, service: ServiceDep) -> Response:
    """`GET /images/{id}` of collection `name`."""
    return await image_answer(id, service, name)
