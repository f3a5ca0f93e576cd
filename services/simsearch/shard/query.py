"""A shard search request checked into what will run: a `ShardQuery`, made by `prepare`.

Every check a request must pass before FAISS sees it lives here, so that the search
itself (`execute.py`) can trust its input. The checks are on the hot path: plain
comparisons, one decode of the vectors, one finiteness scan and the one native-order
float32 copy FAISS is given — no model validation, nothing awaited. A filter is checked
against the version's metadata schema (`check_filter`: an unknown field, a wrong type, a
version without metadata, a filter over the limits are 400s) only when there is one.
An exact request (`exact`, the recall monitor's) passes the same checks but the k·refine
limit: it answers k per query, whatever refine says.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simsearch.common.errors import (
    InvalidParameter,
    InvalidVector,
    PartitionsNotReady,
    VersionNotLoaded,
)
from simsearch.common.filters import Filter, check_filter
from simsearch.common.wire import ShardSearchRequest, decode_array
from simsearch.shard.drift import DriftWindow
from simsearch.shard.settings import ShardSettings
from simsearch.shard.versions import Holdings, VersionView


@dataclass(frozen=True)
class ShardQuery:
    """A validated search request, bound to the version snapshot it runs against."""

    view: VersionView
    queries: np.ndarray
    wanted: list[int]
    k: int
    nprobe: int
    refine: int
    projected: bool = False  # queries are already in the version's scoring space
    filter: Filter | None = None  # checked against the version's schema
    filter_exact_max: int = 0  # with a filter: selections up to this are scanned exactly
    exact: bool = False  # brute force over every row (`shard.exact`): nprobe, refine unused
    drift: DriftWindow | None = None  # where the queries' centroid distances go, if anywhere


def prepare(request: ShardSearchRequest, holdings: Holdings, settings: ShardSettings) -> ShardQuery:
    """Check `request` against the held version and the limits; 4xx reasons name the field."""
    view = held_view(holdings, request.version, settings)
    if request.filter is not None:
        check_filter(request.filter, view.manifest.metadata)
    wanted = sorted(set(request.partitions))
    check_partitions(view, wanted, settings)
    dim = view.manifest.model.dim
    if request.space == "index" and view.index is not None:
        dim = view.index.template.dim
    if request.dim != dim:
        raise InvalidVector(
            f"query dim is {request.dim}; version {view.version} has {dim} ({request.space} space)"
        )
    limit = settings.max_batch_queries
    if request.nq > limit:
        raise InvalidParameter(f"nq={request.nq} queries; at most {limit} per request")
    if request.k > settings.max_k:
        raise InvalidParameter(f"k={request.k} is over the limit of {settings.max_k}")
    queries = decode_array(request.vectors_b64, "<f4", (request.nq, dim))
    if not np.isfinite(queries).all():
        raise InvalidVector("query vectors contain NaN or infinity")
    params = view.manifest.params
    nprobe = request.nprobe or settings.nprobe or params.nprobe
    refine = request.refine or settings.refine or params.refine
    if not request.exact and request.k * refine > settings.max_candidates:
        raise InvalidParameter(
            f"k·refine = {request.k}·{refine} candidates per query is over the limit of "
            f"{settings.max_candidates}"
        )
    return ShardQuery(
        view,
        queries.astype(np.float32),
        wanted,
        request.k,
        nprobe,
        refine,
        request.space == "index",
        request.filter,
        settings.filter_exact_max,
        request.exact,
        _drift_window(request, view, settings),
    )


def _drift_window(
    request: ShardSearchRequest, view: VersionView, settings: ShardSettings
) -> DriftWindow | None:
    """The version's drift window when this request's queries count (`shard.drift`):
    an unfiltered approximate search of vectors in the model's space."""
    if request.exact or request.filter is not None or request.space != "model":
        return None
    return view.index.drift_window(settings.drift_window_s) if view.index is not None else None


def held_view(holdings: Holdings, version: str, settings: ShardSettings) -> VersionView:
    """The snapshot of `version` held here; 409 naming what is held if it is not.

    `settings` rather than the ordinal: `ordinal` is a property, read only for an error.
    """
    view = holdings.view(version)
    if view is None:
        held = [v.version for v in holdings.views()] or "none"
        raise VersionNotLoaded(
            f"version {version} is not loaded on shard {settings.ordinal} (loaded: {held})"
        )
    return view


def check_partitions(view: VersionView, wanted: list[int], settings: ShardSettings) -> None:
    """400 for a partition the version does not have; 409 for one not ready here (why)."""
    total = view.manifest.partitions
    bad = [p for p in wanted if not 0 <= p < total]
    if bad:
        raise InvalidParameter(f"partitions {bad[:8]} do not exist: {view.version} has {total}")
    missing = [p for p in wanted if p not in view.ready]
    if missing:
        why = {p: "failed" if p in view.failed else "loading" for p in missing}
        why.update({p: "not held" for p in missing if p not in view.assigned})
        raise PartitionsNotReady(
            f"partitions {missing} of {view.version} are not ready on shard {settings.ordinal}: "
            + ", ".join(f"{p} {state}" for p, state in sorted(why.items())[:16])
        )
