"""Each public route as a `Call`: the request to build and how to read its answer.

Both clients (`sync.Client`, `aio.AsyncClient`) turn a method into a `Call` here, send it
with their own transport, and hand the answer back here to be checked and parsed, so the
two cannot disagree on a path, a parameter or a model: only sending and sleeping differ.
`ROUTES` names the client method of every public route; a test checks it against the
router's OpenAPI document, so a new route without a client method fails.

Search parameters travel in `Knobs`, one value for every search method: the index knobs,
the collection and the filter. A search (and a download) in a named collection calls the
same route under `/collections/{name}` (`IN_COLLECTION`); `collection=None` calls the
route without the prefix, which the router serves from its default collection.
"""

from __future__ import annotations

import mimetypes
import os
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Generic, Protocol, TypeVar

import httpx
import pydantic

from simsearch import __version__
from simsearch.client.errors import UnexpectedResponse, error_from_response
from simsearch.client.options import Timeouts
from simsearch.common.api import (
    BatchSearchResponse,
    CollectionDetail,
    CollectionList,
    HealthResponse,
    ReloadResponse,
    SearchResponse,
    StatsResponse,
    VectorQuery,
)
from simsearch.common.apidoc import ReadyBody
from simsearch.common.filters import Filter
from simsearch.common.manifest import is_index_name

__all__ = [
    "IN_COLLECTION",
    "ROUTES",
    "Call",
    "FilterInput",
    "ImageInput",
    "Knobs",
    "MatrixLike",
    "VectorLike",
    "answer",
    "build",
    "checked",
    "collection_name",
    "filter_of",
    "http_options",
    "redirect_location",
]

T = TypeVar("T")

# client method -> (HTTP method, path) of the router's public route it calls
ROUTES: dict[str, tuple[str, str]] = {
    "health": ("GET", "/health"),
    "live": ("GET", "/health/live"),
    "ready": ("GET", "/health/ready"),
    "stats": ("GET", "/stats"),
    "metrics": ("GET", "/metrics"),
    "search_vector": ("POST", "/search/vector"),
    "search_image": ("POST", "/search/image"),
    "search_similar": ("GET", "/search/similar/{id}"),
    "image": ("GET", "/images/{id}"),
    "reload": ("POST", "/admin/reload"),
    "collections": ("GET", "/collections"),
    "collection": ("GET", "/collections/{name}"),
}
# client method -> the route it calls when given `collection=` (the same body and answer)
IN_COLLECTION: dict[str, tuple[str, str]] = {
    "search_vector": ("POST", "/collections/{name}/search/vector"),
    "search_image": ("POST", "/collections/{name}/search/image"),
    "search_similar": ("GET", "/collections/{name}/search/similar/{id}"),
    "image": ("GET", "/collections/{name}/images/{id}"),
}
_FILTER: pydantic.TypeAdapter[Filter] = pydantic.TypeAdapter(Filter)
USER_AGENT = f"simsearch-client/{__version__}"
# added to the read timeout and the deadline of a call the server may hold on purpose
_SERVER_WAIT_SLACK_S = 10.0


class _ToList(Protocol):
    def tolist(self) -> Any: ...


VectorLike = Sequence[float] | _ToList  # a list, a tuple, a 1-d numpy array
MatrixLike = Sequence[Sequence[float]] | _ToList  # rows of those, a 2-d numpy array
ImageInput = bytes | str | os.PathLike[str] | IO[bytes]  # bytes, a path, an open file
FilterInput = Filter | Mapping[str, Any]  # the models of common/filters.py, or their JSON


def filter_of(value: FilterInput | None) -> Filter | None:
    """`value` as a `Filter`: a dict is validated here, so a malformed filter raises
    pydantic's `ValidationError` (a `ValueError`) before anything is sent. Whether its
    fields exist is the server's to say (`InvalidFilter`): only it knows the schema."""
    if value is None:
        return None
    return _FILTER.validate_python(value)


def collection_name(name: str | None) -> str | None:
    """`name` unchanged if it is a valid collection name (it becomes a path segment), so
    a typo like "Flowers" is a `ValueError` here, not a 404 from the server."""
    if name is not None and not is_index_name(name):
        raise ValueError(
            f"invalid collection name {name!r}: lower-case letters, digits, '-' and '_', "
            "starting with a letter or digit, at most 63 characters"
        )
    return name


@dataclass(frozen=True)
class Knobs:
    """What every search takes besides its query: results per query, the index knobs,
    the collection searched and the filter.

    None leaves the router's default (`SIMSEARCH_DEFAULT_K`, the index's nprobe/refine,
    the default collection, no filter); `strict` turns a partial answer into a 503
    (`Unavailable`, code `partial_answer`). Build it with `of` from what a caller gave.
    """

    k: int | None = None
    nprobe: int | None = None
    refine: int | None = None
    strict: bool = False
    collection: str | None = None
    filter: Filter | None = None

    @classmethod
    def of(
        cls,
        k: int | None,
        nprobe: int | None,
        refine: int | None,
        strict: bool,
        collection: str | None,
        filter: FilterInput | None,
    ) -> Knobs:
        """The knobs of one search, its collection name and filter checked (`ValueError`)."""
        return cls(k, nprobe, refine, strict, collection_name(collection), filter_of(filter))

    def params(self) -> dict[str, str]:
        """Query-string parameters (image and similar searches; not the filter)."""
        named = {"k": self.k, "nprobe": self.nprobe, "refine": self.refine}
        params = {name: str(value) for name, value in named.items() if value is not None}
        return {**params, **self.strict_param()}

    def strict_param(self) -> dict[str, str]:
        """Sent only when set: `/search/vector` without a query string takes the fast path."""
        return {"strict": "true"} if self.strict else {}

    def filter_field(self) -> dict[str, str]:
        """`{"filter": <JSON>}` when there is one: the similar search's query parameter
        and the image search's form field (the vector search has it in its body)."""
        if self.filter is None:
            return {}
        return {"filter": _FILTER.dump_json(self.filter, by_alias=True, exclude_none=True).decode()}


@dataclass(frozen=True)
class Call(Generic[T]):
    """One route call, ready to send as many times as the retry policy allows."""

    method: str
    url: str  # a path under the base URL, or an absolute URL (a presigned redirect)
    parse: Callable[[httpx.Response], T]
    params: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None
    files: dict[str, tuple[str, bytes, str]] | None = None
    data: dict[str, str] | None = None  # form fields sent with `files`
    headers: dict[str, str] = field(default_factory=dict)
    ok: frozenset[int] = frozenset({200})
    keyed: bool = True  # send the API key (never to a presigned object-store URL)
    server_wait_s: float = 0.0  # the server may hold the answer this long (reload)

    def timeouts(self, base: Timeouts) -> Timeouts:
        """`base`, stretched so that a server that waits on purpose is not cut off."""
        if self.server_wait_s <= 0:
            return base
        wait = self.server_wait_s + _SERVER_WAIT_SLACK_S
        return Timeouts(base.connect_s, max(base.read_s, wait), max(base.deadline_s, wait))


def _json(model: type[pydantic.BaseModel]) -> Callable[[httpx.Response], Any]:
    def parse(response: httpx.Response) -> Any:
        try:
            return model.model_validate_json(response.content)
        except pydantic.ValidationError as exc:
            raise UnexpectedResponse(
                f"{response.status_code} from {response.request.url.path} is not a "
                f"{model.__name__}: {exc.errors(include_url=False)[:3]}"
            ) from None

    return parse


def _nothing(response: httpx.Response) -> None:
    return None


def _path(method: str, collection: str | None = None, **values: object) -> str:
    """The path of client method `method`'s route: its collection's when one is given."""
    if collection is None:
        return ROUTES[method][1].format(**values)
    return IN_COLLECTION[method][1].format(name=_segment(collection), **values)


def _segment(value: str) -> str:
    """Quoted although a valid name needs no quoting: a path segment, never a path."""
    return urllib.parse.quote(value, safe="")


def _call(
    name: str, parse: Callable[[httpx.Response], T], collection: str | None = None, **kwargs: Any
) -> Call[T]:
    method = (ROUTES if collection is None else IN_COLLECTION)[name][0]
    return Call(method, _path(name, collection), parse, **kwargs)


def health() -> Call[HealthResponse]:
    """`/health` answers 503 with its own body when unhealthy: an answer, not an error."""
    return _call("health", _json(HealthResponse), ok=frozenset({200, 503}))


def ready() -> Call[ReadyBody]:
    return _call("ready", _json(ReadyBody), ok=frozenset({200, 503}))


def live() -> Call[bool]:
    return _call("live", lambda response: True)


def stats() -> Call[StatsResponse]:
    return _call("stats", _json(StatsResponse))


def metrics() -> Call[str]:
    return _call("metrics", lambda response: response.text)


def collections() -> Call[CollectionList]:
    return _call("collections", _json(CollectionList))


def collection(name: str) -> Call[CollectionDetail]:
    path = _path("collection", name=_segment(collection_name(name) or ""))
    return Call("GET", path, _json(CollectionDetail))


def search_vector(
    vector: VectorLike | None, vectors: MatrixLike | None, knobs: Knobs
) -> Call[SearchResponse] | Call[BatchSearchResponse]:
    """The body is checked by the server's own model before it is sent (a pydantic
    `ValidationError`, a `ValueError`, for neither or both of `vector`/`vectors`)."""
    query = VectorQuery(
        vector=None if vector is None else _floats(vector),
        vectors=None if vectors is None else [_floats(row) for row in _rows(vectors)],
        k=knobs.k,
        nprobe=knobs.nprobe,
        refine=knobs.refine,
        filter=knobs.filter,
    )
    model = SearchResponse if vectors is None else BatchSearchResponse
    return _call(
        "search_vector",
        _json(model),
        knobs.collection,
        params=knobs.strict_param(),
        content=query.model_dump_json(exclude_none=True, by_alias=True).encode(),
        headers={"Content-Type": "application/json"},
    )


def search_image(image: ImageInput, filename: str | None, knobs: Knobs) -> Call[SearchResponse]:
    """Read once here, so every retry sends the same bytes (images are small)."""
    name, data = _image_bytes(image, filename)
    kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return _call(
        "search_image",
        _json(SearchResponse),
        knobs.collection,
        params=knobs.params(),
        files={"file": (name, data, kind)},
        data=knobs.filter_field() or None,
    )


def search_similar(id: int, knobs: Knobs) -> Call[SearchResponse]:
    path = _path("search_similar", knobs.collection, id=int(id))
    return Call("GET", path, _json(SearchResponse), {**knobs.params(), **knobs.filter_field()})


def image(id: int, collection: str | None = None) -> Call[None]:
    """The body is streamed by the client; a 307 is followed with `redirected`."""
    path = _path("image", collection_name(collection), id=int(id))
    return Call("GET", path, _nothing, ok=frozenset({200, 307}))


def redirected(location: str) -> Call[None]:
    """The presigned object-store URL a 307 named: fetched without the API key."""
    return Call("GET", location, _nothing, keyed=False)


def reload(timeout_s: float) -> Call[ReloadResponse]:
    """The router waits up to `timeout_s` for the shards: the call's timeouts allow it."""
    return _call(
        "reload",
        _json(ReloadResponse),
        params={"timeout_s": f"{timeout_s:g}"},
        server_wait_s=timeout_s,
    )


def http_options(base_url: str, headers: Mapping[str, str] | None) -> dict[str, Any]:
    """What both clients give their httpx client: the router's URL, headers, and no
    automatic redirects (a 307 to a presigned URL is followed by hand, without the key)."""
    return {
        "base_url": base_url.rstrip("/"),
        "headers": dict(headers or {}),
        "follow_redirects": False,
    }


def build(
    http: httpx.Client | httpx.AsyncClient,
    call: Call[Any],
    api_key: str | None,
    request_id: str | None,
    timeout: httpx.Timeout,
) -> httpx.Request:
    """The request of one attempt (the same for sync and async clients)."""
    headers = {"User-Agent": USER_AGENT, **call.headers}
    if api_key is not None and call.keyed:
        headers["X-API-Key"] = api_key
    if request_id is not None:
        headers["X-Request-ID"] = request_id
    return http.build_request(
        call.method,
        call.url,
        params=call.params or None,
        content=call.content,
        files=call.files,
        data=call.data,
        headers=headers,
        timeout=timeout,
    )


def checked(call: Call[Any], response: httpx.Response) -> httpx.Response:
    """`response` if its status is one the call accepts; else the typed error (body read)."""
    if response.status_code in call.ok:
        return response
    raise error_from_response(response)


def answer(call: Call[T], response: httpx.Response) -> T:
    """The parsed answer. A non-200 the call accepts (a 503 health body) that does not
    parse is the error its status says, not an `UnexpectedResponse`."""
    try:
        return call.parse(response)
    except UnexpectedResponse:
        if response.status_code != 200:
            raise error_from_response(response) from None
        raise


def redirect_location(response: httpx.Response) -> str | None:
    """Where a 307 sends the download (absolute), or None for the bytes themselves."""
    if response.status_code != 307:
        return None
    location = response.headers.get("location")
    if not location:
        raise UnexpectedResponse("a 307 without a Location header")
    return str(response.request.url.join(location))


def _floats(values: Any) -> list[float]:
    """Plain floats from a sequence or a numpy row (numpy scalars are not JSON)."""
    items = values.tolist() if hasattr(values, "tolist") else values
    return [float(v) for v in items]


def _rows(values: MatrixLike) -> list[Any]:
    return values.tolist() if hasattr(values, "tolist") else list(values)


def _image_bytes(image: ImageInput, filename: str | None) -> tuple[str, bytes]:
    """(filename, bytes) of the query image from bytes, a path or an open binary file."""
    if isinstance(image, bytes | bytearray):
        return filename or "image", bytes(image)
    if isinstance(image, str | os.PathLike):
        path = Path(image)
        return filename or path.name, path.read_bytes()
    data = image.read()
    name = filename or Path(str(getattr(image, "name", "image"))).name
    return name, data
