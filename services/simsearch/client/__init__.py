"""The Python client of the router's public API: `Client` (blocking) and `AsyncClient`.

A library, not a service: it imports only `simsearch.common` (the shared models of
`common/api.py`, which the router answers with) and httpx, never a service package, and
never torch, FAISS or h5py, so it installs with the core dependencies alone.

    from simsearch.client import Client
    with Client("http://127.0.0.1:8000", api_key="...") as client:
        answer = client.search_image("daisy.jpg", k=5)
        tulips = client.search_image("daisy.jpg", collection="flowers",
                                     filter={"field": "label", "eq": "tulips"})

Errors are the tree of `simsearch.client.errors` (never an httpx exception); retries and
timeouts are `RetryPolicy` and `Timeouts`. See docs/client.md.
"""

from simsearch.client.aio import AsyncClient
from simsearch.client.errors import (
    ApiError,
    BadRequest,
    ClientError,
    CollectionNotFound,
    ConnectionFailed,
    FilterTooLarge,
    Forbidden,
    InvalidFilter,
    NotFound,
    RateLimited,
    ServerError,
    TimedOut,
    Unauthorized,
    Unavailable,
    UnexpectedResponse,
)
from simsearch.client.options import Timeouts
from simsearch.client.retry import RetryPolicy
from simsearch.client.sync import Client
from simsearch.common.api import (
    BatchSearchResponse,
    CollectionDetail,
    CollectionList,
    CollectionSummary,
    CollectionVersion,
    HealthResponse,
    ReloadResponse,
    SearchHit,
    SearchResponse,
    StatsResponse,
)
from simsearch.common.filters import Filter

__all__ = [
    "ApiError",
    "AsyncClient",
    "BadRequest",
    "BatchSearchResponse",
    "Client",
    "ClientError",
    "CollectionDetail",
    "CollectionList",
    "CollectionNotFound",
    "CollectionSummary",
    "CollectionVersion",
    "ConnectionFailed",
    "Filter",
    "FilterTooLarge",
    "Forbidden",
    "HealthResponse",
    "InvalidFilter",
    "NotFound",
    "RateLimited",
    "ReloadResponse",
    "RetryPolicy",
    "SearchHit",
    "SearchResponse",
    "ServerError",
    "StatsResponse",
    "TimedOut",
    "Timeouts",
    "Unauthorized",
    "Unavailable",
    "UnexpectedResponse",
]
