"""Messages between services (router ↔ embedder ↔ shards), as pydantic models.

Vectors travel either as JSON lists (readable, the default for people) or as base64 of
little-endian float32 rows (`encoding="base64"`), which is ~3× smaller and ~20× faster
to parse for machine clients such as the indexer and the router.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from simsearch.common.errors import InvalidVector
from simsearch.common.filters import Filter
from simsearch.common.limits import MAX_K
from simsearch.common.metadata import FieldType

VectorEncoding = Literal["json", "base64"]
VectorSpace = Literal["model", "index"]
_LE_F32 = np.dtype("<f4")


def encode_vectors(vectors: np.ndarray) -> str:
    """Rows of float32 as base64 (little-endian, row-major)."""
    return base64.b64encode(np.ascontiguousarray(vectors, dtype=_LE_F32).tobytes()).decode()


def decode_vectors(payload: str, dim: int) -> np.ndarray:
    """Inverse of `encode_vectors`; refuses payloads that are not whole rows of `dim`."""
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as err:
        raise InvalidVector(f"vectors_b64 is not valid base64: {err}") from err
    if dim <= 0 or len(raw) % (4 * dim):
        raise InvalidVector(f"vectors_b64 holds {len(raw)} bytes, not whole rows of {dim} float32")
    return np.frombuffer(raw, dtype=_LE_F32).reshape(-1, dim).astype(np.float32)


class ItemError(BaseModel):
    """Why one item of a batch request failed (the others still succeed).

    `status` is the HTTP status the error would have as a whole answer, given by the edge's
    mapping (`simsearch.common.http.status_for`), never stored on the error itself.
    """

    index: int
    key: str
    status: int
    error: str
    detail: str


class EmbedResponse(BaseModel):
    """Vectors for the inputs, in input order.

    With `encoding="json"`, `vectors[i]` is null where item i failed (see `errors`).
    With `encoding="base64"`, `vectors_b64` holds `count` rows; failed rows are zeros.
    """

    model: str
    dim: int
    count: int
    encoding: VectorEncoding = "json"
    vectors: list[list[float] | None] | None = None
    vectors_b64: str | None = None
    errors: list[ItemError] = Field(default_factory=list)


class EmbedKeysRequest(BaseModel):
    """Object keys (relative to the embedder's store) or full `s3://`/`file://` URIs."""

    keys: list[str] = Field(min_length=1)
    encoding: VectorEncoding = "json"


class Preprocessing(BaseModel):
    """How an image becomes the model's input; recorded in the index manifest."""

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"


class EmbedderInfo(BaseModel):
    """What `GET /info` says: enough for the indexer to record the model in a manifest."""

    model: str
    dim: int
    weights: str
    device: str
    precision: str
    preprocessing: Preprocessing
    max_batch: int
    max_wait_ms: float
    torch_threads: int
    decode_workers: int
    max_image_bytes: int
    max_image_pixels: int
    version: str


# --- router ↔ shard -------------------------------------------------------------------


def encode_array(values: np.ndarray, dtype: str) -> str:
    """Any numeric array as base64 of little-endian `dtype` (e.g. "<i8", "<f4")."""
    return base64.b64encode(np.ascontiguousarray(values, dtype=np.dtype(dtype)).tobytes()).decode()


def decode_array(payload: str, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of `encode_array`; refuses payloads of the wrong size."""
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as err:
        raise InvalidVector(f"payload is not valid base64: {err}") from err
    expected = math.prod(shape) * np.dtype(dtype).itemsize  # np.prod: ~10 µs a call
    if len(raw) != expected:
        raise InvalidVector(f"payload holds {len(raw)} bytes, expected {expected} for {shape}")
    return np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(shape)


class ShardSearchRequest(BaseModel):
    """One query batch for one shard: which version and exactly which partitions to scan.

    The router names the partitions so that, while shards rebalance, no partition is
    answered twice and none is forgotten.
    """

    version: str
    partitions: list[int]
    collection: str = "default"  # the index (collection) the version belongs to
    k: int = Field(ge=1, le=MAX_K)
    nprobe: int | None = Field(None, ge=1, le=65536)
    refine: int | None = Field(None, ge=1, le=100)
    dim: int = Field(ge=1)
    nq: int = Field(ge=1, le=1024)
    vectors_b64: str  # nq×dim little-endian float32
    # "model": unit vectors as the model makes them (the shard projects them into the
    # version's scoring space); "index": already in that space (a stored item's vector)
    space: VectorSpace = "model"
    # only rows whose metadata satisfies it may be returned (`common.filters`); applied
    # inside the scan, never to an unfiltered top-k
    filter: Filter | None = None
    # brute force instead of the index: every row of the named partitions scored exactly
    # from their memory-mapped features, in the shard's low-priority pool (nprobe and
    # refine unused). The recall monitor's reference answer; see `ShardCandidates.exact_scan`
    exact: bool = False


class ShardCandidates(BaseModel):
    """Each query's best k·refine candidates on this shard, best approximate score first.

    `ids_b64` (<i8), `approx_b64` and `exact_b64` (<f4) are nq×width arrays; id -1 marks an
    empty slot. `paths[q][j]` is the stored path of candidate j of query q: "" if empty, and
    "" for a candidate that `k` earlier ones beat by exact score, which can never reach the
    merged top k (`common.topk.can_rank`; it saves ~2/3 of the path look-ups and bytes).
    """

    version: str
    nq: int
    width: int
    ids_b64: str
    approx_b64: str
    exact_b64: str
    paths: list[list[str]]
    took_ms: float
    # True when the shard ran the brute-force scan `exact` asked for. A shard that
    # predates the field ignores `exact` and answers from the index: the router then
    # drops the recall sample instead of comparing the approximate answer with itself
    exact_scan: bool = False


class ShardVersionInfo(BaseModel):
    """What a shard holds of one index version.

    `live` is True for the version `CURRENT` named at the shard's last poll that could
    read it. The router prefers a fully covered live version over a newer one, so that
    after `simsearch index rollback` (CURRENT on an *older* version) queries follow
    CURRENT instead of the newest id. Defaults to False, so a report from a shard that
    predates the field reads as "no live information" and the router falls back to the
    newest complete version, as before.
    """

    version: str
    collection: str = "default"  # the collection (index name) the version belongs to
    partitions: int  # P of that version
    ready: list[int]
    loading: list[int] = Field(default_factory=list)
    failed: dict[int, str] = Field(default_factory=dict)  # partition -> why it is not served
    dim: int
    nprobe: int
    refine: int
    vectors: int  # vectors in the ready partitions
    model: str
    live: bool = False  # CURRENT pointed here at this shard's last successful poll
    # recall@10 the indexer measured at build time (manifest `probe`), None if not measured
    recall_probe: float | None = None
    probe_queries: int | None = None
    scoring_dim: int | None = None  # dimension after the version's PCA (None: the model's)
    # the version's metadata schema (field -> type), None for versions without metadata
    metadata: dict[str, FieldType] | None = None
    # drift: live queries' mean distance to their nearest coarse centroid over the shard's
    # recent window, against the indexed vectors' (manifest `centroid_fit.indexed`);
    # None when not measured (exact plan, no queries yet, a version without the baseline)
    centroid_distance_live: float | None = None
    centroid_distance_indexed: float | None = None
    drift_ratio: float | None = None  # live / indexed (1.0: queries look like the data)
    drift_queries: int = 0  # queries in the live window


MemoryKind = Literal["codes", "features", "metadata", "other"]


class FileMemory(BaseModel):
    """One kind of memory-mapped file: how much is mapped, resident, and recently used.

    From `/proc/self/smaps`: `resident_bytes` sums the mappings' Rss less their
    Anonymous pages (page cache the process maps); `working_set_bytes` is what was
    referenced during the last working-set windows (None until one has passed, or
    where the kernel refuses `clear_refs`).
    """

    mapped_bytes: int
    resident_bytes: int
    working_set_bytes: int | None = None


class ShardMemory(BaseModel):
    """A shard's memory, split the way limits and the page cache see it.

    `anonymous_bytes` is what only this process can hold (heap, fast-scan stacks, the
    paths) and what an OOM kill weighs; `file_bytes` is the page cache of its mapped
    files, which the kernel may drop and read back. `files` splits the mapped files by
    kind (codes: index files; features: features.h5; metadata: metadata.arrow; other:
    libraries and the rest). `needed_bytes` estimates the memory that keeps p99 within
    2× of the fully cached p99: anonymous plus the index files' working set (see
    docs/deploy.md, where it is measured).
    """

    anonymous_bytes: int
    file_bytes: int
    mapped_bytes: int  # the total size of the mappings of every file
    files: dict[MemoryKind, FileMemory]
    stacks_bytes: int = 0  # of `anonymous_bytes`: fast-scan lists packed in RAM
    paths_bytes: int = 0  # of `anonymous_bytes`: the stored paths, held packed
    working_set_bytes: int | None = None  # of every index file (codes, features, metadata)
    working_set_window_s: float = 0  # the span the working set was measured over
    needed_bytes: int | None = None  # see the class docstring; None until measured


class ShardInfo(BaseModel):
    """`GET /info` of a shard: the router plans every query from these."""

    ordinal: int
    replicas: int
    index: str
    ready: bool
    versions: list[ShardVersionInfo]  # of every collection, each tagged with its collection
    collections: list[str] = Field(default_factory=list)  # the collections this shard polls
    rss_bytes: int
    version: str  # simsearch version
    # FAISS build: its compile options and whether its AVX2 kernels are there (without
    # them fast-scan is ~15× slower); empty from shards that predate the field
    faiss_options: str = ""
    faiss_avx2: bool | None = None
    # why the last poll did not finish (e.g. the store unreachable while partitions are
    # `loading`); None when all is well and from shards that predate the field
    error: str | None = None
    # anonymous / file-backed split of the process (None from shards that predate it)
    memory: ShardMemory | None = None


class ShardReload(BaseModel):
    """`POST /admin/reload` of a shard: what its poll (run on request) saw.

    200 when that poll finished within the request's timeout, 202 when it is still running
    (loading); the body has the same shape either way.
    """

    current: str | None  # the version CURRENT named; None if nothing was ever published
    versions: list[str]  # version ids held (ready, loading or draining), oldest first
    ready: bool  # the shard's readiness, as /health/ready reports it
    error: str | None = None  # why the last poll failed (store unreachable, ...), if it did


class ShardItem(BaseModel):
    """`GET /items/{id}` of a shard: one indexed image's path and exact vector."""

    id: int
    version: str
    partition: int
    path: str
    vector_b64: str  # dim little-endian float32
    space: VectorSpace = "model"  # "index": the version's scoring space (after its PCA)
    dim: int | None = None  # of vector_b64 (None from shards that predate the field)
