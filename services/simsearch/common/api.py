"""The public API's request and response bodies, shared by the router and the client.

Pydantic models only: the router answers with them and `simsearch.client` parses its
answers into them, so a change here is a change to the public contract on both sides at
once. The checks a query must pass and the shaping of an answer stay in the router
(`router/query.py`). The response keeps the old single-process service's shape,
`{"status": "success", "results": [{"path", "similarity_score", "rank"}]}`, and adds what
a sharded answer must say about itself: `coverage`, `partial`, `index_version`, `took_ms`.
Nothing here imports a service (only pydantic), so the client installs without them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from simsearch.common.filters import Filter
from simsearch.common.metadata import FieldType

__all__ = [
    "BatchSearchResponse",
    "CollectionDetail",
    "CollectionList",
    "CollectionSummary",
    "CollectionVersion",
    "HealthResponse",
    "ReloadResponse",
    "SearchHit",
    "SearchResponse",
    "ShardCounts",
    "ShardReloadResult",
    "ShardStatus",
    "StatsResponse",
    "VectorQuery",
    "VersionStatus",
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
    filter: Filter | None = Field(
        None,
        description="Only images whose metadata satisfies this filter (see docs/filters.md).",
    )

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


class RecallStatus(BaseModel):
    """Live recall of one collection's version: sampled real queries re-run exactly."""

    collection: str
    version: str
    recall: float | None = Field(
        description="Mean recall@k of the sampled queries over the window (None: no sample "
        "yet); ties at the k-th score count as hits."
    )
    samples: int = Field(description="Sampled queries in the window.")
    window_s: float = Field(description="The sliding window the mean is over.")
    baseline: float | None = Field(
        None, description="recall@10 the indexer measured at build time (the probe)."
    )
    drift: bool = Field(
        False, description="True when live recall is below the baseline by more than the margin."
    )
    drift_ratio: float | None = Field(
        None,
        description="Live queries' distance to their nearest coarse centroid over the indexed "
        "vectors' (1.0: the queries look like the data; well above: a --retrain is due).",
    )


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
    recall: list[RecallStatus] = Field(
        default_factory=list,
        description="Live recall and drift per collection and version (the recall monitor).",
    )


class CollectionSummary(BaseModel):
    """One collection (a named index) as `GET /collections` lists it."""

    name: str
    version: str | None = Field(description="The version its queries use now (None: none).")
    vectors: int
    partitions: int | None
    dim: int | None
    model: str | None
    coverage: float = Field(description="Covered partitions / P of that version.")
    partial: bool = Field(description="True when queries would get a partial answer.")
    metadata: dict[str, FieldType] | None = Field(
        None, description="Fields a filter may use, with their types (None: no metadata)."
    )


class CollectionVersion(BaseModel):
    """One version of a collection some shard holds."""

    version: str
    live: bool = Field(description="CURRENT named it at some shard's last poll.")
    partitions: int
    coverage: float
    vectors: int


class CollectionDetail(CollectionSummary):
    """`GET /collections/{name}`: the summary and every version the shards hold."""

    versions: list[CollectionVersion]


class CollectionList(BaseModel):
    """`GET /collections`: every collection some healthy shard serves, by name."""

    default: str = Field(description="The collection the routes without /collections use.")
    collections: list[CollectionSummary]


class ShardReloadResult(BaseModel):
    """How one shard answered `POST /admin/reload`, as the router reports it.

    `status` 200: the shard polled and finished; 202: it polled and is still loading;
    anything else, or None when no HTTP answer came, comes with `error`. The other fields
    are the shard's `ShardReload` when it answered 200 or 202.
    """

    status: int | None = None
    current: str | None = None
    versions: list[str] = Field(default_factory=list)
    ready: bool = False
    error: str | None = None


class ReloadResponse(BaseModel):
    """`POST /admin/reload`: each known shard's answer, by URL (errors included, never 500)."""

    shards: dict[str, ShardReloadResult]
