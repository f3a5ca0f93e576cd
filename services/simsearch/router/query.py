"""The checks a query must pass, and the public shape of its answer.

Pure code, unit-tested without a server: the checks raise the domain's `BadInput` errors
(400 with the reason) before any shard is asked; `to_hits` and `answer_fields` turn a
merged `FanoutResult` into the fields of the response models (`common/api.py`).

A filter in a JSON body is part of that body's model (`VectorQuery.filter`: a malformed one
is a 422 like any other field). Where it travels as a string (the image search's form
field, the similar search's query parameter), `parse_filter` reads it: a string that is
not JSON, or not a filter, is a 400 `invalid_filter` naming `filter` — a schema cannot
describe the JSON inside a string, so a fuzzer's random string is the caller's mistake,
not a contract violation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import TypeAdapter, ValidationError

from simsearch.common.api import SearchHit
from simsearch.common.errors import EmptyInput, InvalidFilter, InvalidParameter, InvalidVector
from simsearch.common.filters import Filter
from simsearch.router.fanout import FanoutResult, Hit

__all__ = ["answer_fields", "check_k", "hit_prefix", "parse_filter", "prepare_queries", "to_hits"]

_FILTER: TypeAdapter[Filter] = TypeAdapter(Filter)


def parse_filter(text: str | None, where: str) -> Filter | None:
    """The filter a string carries (None for none or an empty string); 400
    `invalid_filter` naming `where` (e.g. "query parameter 'filter'") otherwise."""
    if text is None or not text.strip():
        return None
    try:
        return _FILTER.validate_json(text)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        at = ".".join(str(p) for p in first["loc"])
        raise InvalidFilter(
            f"{where} is not a filter: {at + ': ' if at else ''}{first['msg']} "
            "(see docs/filters.md)"
        ) from None


def hit_prefix(root_path: str, collection: str | None) -> str:
    """What a hit's `url` starts with: the app's root path, then the collection's routes
    for a collection search (`/collections/{name}`), so `{prefix}/images/{id}` names the
    image in the collection it was found in."""
    return f"{root_path}/collections/{collection}" if collection is not None else root_path


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
