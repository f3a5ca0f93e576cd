"""The public API's request and response bodies, and the checks a query must pass.

Pure code: the checks raise the domain's `BadInput` errors (400 with the reason) and are
unit-tested without a server. The response keeps the old single-process service's shape,
`{"status": "success", "results": [{"path", "similarity_score", "rank"}]}`, and adds what
a sharded answer must say about itself: `coverage`, `partial`, `index_version`, `took_ms`.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from simsearch.common.errors import EmptyInput, InvalidParameter, InvalidVector
from simsearch.router.discovery import ShardReloadResult
from simsearch.router.fanout import FanoutResult, Hit

__all__ = [
    "BatchSearchResponse",
    "HealthResponse",
    "ReloadResponse",
    "SearchHit",
    "SearchResponse",
    "ShardCounts",
    "ShardStatus",
    "StatsResponse",
    "VectorQuery",
    "VersionStatus",
    "answer_fields",
    "check_k",
    "prepare_queries",
    "to_hits",
]


class VectorQuery(BaseModel):
    """`POST /search/vector`: one `vector`, or several `vectors` searched as one batch.

    The schema says "exactly one of" too (`oneOf`), so the documented contract refuses what
    `_one_of` refuses: a body with neither, or with both, is not schema-valid.
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {"required": [name], "properties": {name: {"type": "array"}}}
                for name in ("vector", "vectors")
            ]
        },
    )

    vector: list[float] | None = Field(None, description="One query vector (index dim).")
    vectors: list[list[float]] | None = Field(None, description="Several query vectors.")
    k: int | None = Field(
        None,
        description="Results per query (1..SIMSEARCH_MAX_K); default SIMSEARCH_DEFAULT_K.",
        json_schema_extra={"minimum": 1},  # schema only: k=0 keeps its 400 naming the range
    )
    nprobe: int | None = Field(None, ge=1, le=65536, description="Override the index's nprobe.")
    refine: int | None = Field(None, ge=1, le=100, description="Override the index's refine.")

    @model_validator(mode="after")
    def _one_of(self) -> VectorQuery:
        if (self.vector is None) == (self.vectors is None):
            raise ValueError("send exactly one of 'vector' (one query) or 'vectors' (a batch)")
        return self

    def rows(self) -> list[list[float]]:
        """The query vectors as rows, whichever field carried them."""
        return [self.vector] if self.vector is not None else list(self.vectors or [])


class SearchHit(BaseModel):
    """One result. `id` is a 63-bit integer: JavaScript clients should use `url`."""

    rank: int = Field(description="1 = most similar.")
    path: str = Field(description="The image's key, relative to the indexed images root.")
    similarity_score: float = Field(description="Cosine similarity, -1..1.")
    id: int = Field(description="Stable id of the image (hash of its key).")
    url: str = Field(description="This router's /images/{id}: the image itself.")


class _Answer(BaseModel):
    status: Literal["success"] = "success"
    k: int
    coverage: float = Field(description="Answered partitions / P; 1.0 for a complete answer.")
    partial: bool = Field(description="True when some partitions did not answer.")
    index_version: str
    partitions: int = Field(description="P of the index version.")
    partitions_answered: int
    took_ms: float


class SearchResponse(_Answer):
    """The answer to one query (the old service's shape plus completeness)."""

    results: list[SearchHit]


class BatchSearchResponse(_Answer):
    """The answer to `vectors`: `results[i]` holds the hits of query i."""

    results: list[list[SearchHit]]


def check_k(k: int | None, default_k: int, max_k: int) -> int:
    """`k`, or the default when not given; 1..max_k or InvalidParameter naming the range."""
    if k is None:
        return default_k
    if isinstance(k, bool) or not 1 <= k <= max_k:
        raise InvalidParameter(f"k must be between 1 and {max_k}, got {k}")
    return int(k)


def prepare_queries(rows: list[list[float]] | np.ndarray, dim: int, max_queries: int) -> np.ndarray:
    """Check query vectors and scale each to unit length (the index is cosine = inner product).

    Refused, with the reason: no vector, too many, a dimension other than the index's,
    NaN or infinity, an all-zero vector (it has no direction). Each row is divided by its
    largest magnitude before the norm is taken, so very large finite values do not
    overflow to infinity on the way to unit length.
    """
    try:
        x = np.asarray(rows, dtype=np.float64) if len(rows) else np.empty((0, dim))
    except (ValueError, TypeError) as exc:
        raise InvalidVector(f"query vectors must be lists of numbers of one length: {exc}") from exc
    if x.ndim != 2:
        raise InvalidVector("every query vector must be a flat list of numbers of one length")
    if len(x) == 0:
        raise EmptyInput("no query vector given")
    if len(x) > max_queries:
        raise InvalidParameter(f"{len(x)} query vectors; at most {max_queries} per request")
    if x.shape[1] != dim:
        raise InvalidVector(f"query vectors have {x.shape[1]} values; the index has dim {dim}")
    if not np.isfinite(x).all():
        raise InvalidVector("query vectors contain NaN or infinity")
    scale = np.abs(x).max(axis=1, keepdims=True)
    if (scale == 0).any():
        raise InvalidVector("a query vector is all zeros: it has no direction to compare")
    x = x / scale
    unit: np.ndarray = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return unit


def to_hits(hits: list[Hit], url_prefix: str = "") -> list[SearchHit]:
    """Ranked public results; `url_prefix` is the app's root path behind a proxy."""
    return [
        SearchHit(
            rank=rank,
            path=hit.path,
            similarity_score=round(hit.score, 6),
            id=hit.id,
            url=f"{url_prefix}/images/{hit.id}",
        )
        for rank, hit in enumerate(hits, start=1)
    ]


def answer_fields(result: FanoutResult, k: int, took_ms: float) -> dict[str, Any]:
    """The completeness fields every search response carries."""
    return {
        "k": k,
        "coverage": round(result.coverage, 6),
        "partial": result.partial,
        "index_version": result.version,
        "partitions": result.partitions,
        "partitions_answered": len(result.answered),
        "took_ms": round(took_ms, 3),
    }


class ShardCounts(BaseModel):
    """How many listed shards answer their /info."""

    total: int
    up: int
    down: int


class HealthResponse(BaseModel):
    """`GET /health`: the old `status` values plus what makes the cluster degraded."""

    status: Literal["healthy", "degraded", "unhealthy"]
    detail: str
    index_version: str | None
    coverage: float = Field(description="Covered partitions / P of the version queries use.")
    partitions: int | None
    total_vectors: int
    shards: ShardCounts
    embedder: bool = Field(description="Whether the embedder answered its last check.")
    embedder_configured: bool = Field(False, description="Whether /search/image is configured.")
    embedder_error: str | None = Field(None, description="Why the embedder is not up.")


class ShardStatus(BaseModel):
    """One shard as the router sees it."""

    url: str
    state: Literal["up", "down", "unknown"]
    ordinal: int | None
    replicas: int | None
    versions: list[str] = Field(description="Index versions the shard reports.")
    ready: list[int] = Field(description="Ready partitions of the version queries use.")
    loading: list[int]
    vectors: int
    last_seen_s: float | None = Field(description="Seconds since its last good /info.")
    latency_ms: float | None
    error: str | None


class VersionStatus(BaseModel):
    """One index version some shard holds, and how much of it is served."""

    version: str
    partitions: int
    coverage: float
    vectors: int


class StatsResponse(BaseModel):
    """`GET /stats`: totals (the old shape), the index, and every shard's partitions."""

    status: Literal["success"] = "success"
    total_vectors: int
    index_version: str | None
    partitions: int | None
    coverage: float
    complete: bool
    model: str | None
    dim: int | None
    nprobe: int | None
    refine: int | None
    shards: list[ShardStatus]
    versions: list[VersionStatus]
    recall_probe: float | None = Field(
        None, description="recall@10 measured at build time on held-out indexed vectors."
    )
    probe_queries: int | None = None


class ReloadResponse(BaseModel):
    """`POST /admin/reload`: each known shard's answer, by URL (errors included, never 500)."""

    shards: dict[str, ShardReloadResult]
