"""Messages between services (router ↔ embedder ↔ shards), as pydantic models.

Vectors travel either as JSON lists (readable, the default for people) or as base64 of
little-endian float32 rows (`encoding="base64"`), which is ~3× smaller and ~20× faster
to parse for machine clients such as the indexer and the router.
"""

from __future__ import annotations

import base64
import binascii
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from simsearch.common.errors import InvalidVector

VectorEncoding = Literal["json", "base64"]
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
    """Why one item of a batch request failed (the others still succeed)."""

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
