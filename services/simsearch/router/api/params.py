"""The documented path and query parameters of the public routes (one definition each).

Bounds here are the OpenAPI contract (the schemathesis fuzz reads them); `k`'s upper
bound is a setting (`SIMSEARCH_MAX_K`), so only its minimum is in the schema and a `k`
out of range stays the service's 400 naming the allowed range.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

__all__ = [
    "CollectionPath",
    "FilterQuery",
    "IdPath",
    "KQuery",
    "NprobeQuery",
    "RefineQuery",
    "ReloadTimeout",
    "StrictQuery",
]

IdPath = Annotated[int, Path(description="An image id (from a search result).")]
KQuery = Annotated[
    int | None,
    # minimum in the schema only: k=0 keeps its 400 naming the allowed range
    Query(description="Results to return (1..SIMSEARCH_MAX_K).", json_schema_extra={"minimum": 1}),
]
StrictQuery = Annotated[bool, Query(description="503 instead of a partial answer.")]
NprobeQuery = Annotated[int | None, Query(ge=1, le=65536, description="Override nprobe.")]
RefineQuery = Annotated[int | None, Query(ge=1, le=100, description="Override refine.")]
FilterQuery = Annotated[
    str | None,
    Query(description="A filter as a JSON string (docs/filters.md); 400 when it is not one."),
]
CollectionPath = Annotated[
    str, Path(description="A collection (a named index), as `GET /collections` lists them.")
]
ReloadTimeout = Annotated[
    float, Query(ge=0, le=300, description="Seconds each shard waits for its poll (then 202).")
]
