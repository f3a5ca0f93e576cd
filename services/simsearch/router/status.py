"""`/health`, `/health/ready` and `/stats` computed from the registry's shard states.

Pure functions of what discovery last saw (plus a clock), so the rules are unit-tested:

* healthy   — some version is fully covered and every listed shard answers;
* degraded  — queries get answers, but partial ones or with less redundancy (a shard is
              down, or no version is complete and the best one is served partially);
* unhealthy — no shard serves anything: every query would fail.

Ready (for the load balancer) means the router can answer: some version has at least one
partition served. Partial coverage shows in every answer (`partial`, `coverage`), in
`/health` (degraded), in `simsearch_router_coverage` and in the chart's alert, not in
readiness: behind a Service, taking every router out because one shard restarts would
turn flagged partial answers into no answers at all. `SIMSEARCH_READY_MIN_COVERAGE`
raises the bar for deployments that prefer no answer to a partial one.

All three are about the default collection (`SIMSEARCH_INDEX`, what the old routes
serve); `GET /collections` reports every collection. Readiness falls back to the
best-served other collection when no shard reports the default one at all, so a router
in front of named collections only still becomes ready.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

from simsearch.common.api import (
    HealthResponse,
    RecallStatus,
    ShardCounts,
    ShardStatus,
    StatsResponse,
    VersionStatus,
)
from simsearch.common.wire import ShardVersionInfo
from simsearch.router.embedder_watch import EmbedderState
from simsearch.router.registry import ShardState, views
from simsearch.router.routing import (
    DEFAULT_COLLECTION,
    ShardView,
    VersionChoice,
    choose_version,
    collections,
    versions,
)

__all__ = ["health", "readiness", "stats"]


def readiness(
    states: Iterable[ShardState],
    polls: int,
    min_coverage: float = 0.0,
    collection: str = DEFAULT_COLLECTION,
) -> tuple[bool, str]:
    """Ready when some index version of `collection` is served (covered at least
    `min_coverage`); of any collection when no shard reports `collection`."""
    if polls == 0:
        return False, "shards not polled yet"
    choice = _ready_choice(views(states), collection)
    if choice is None:
        return False, "no shard serves any index version"
    served = f"version {choice.version}: {len(choice.covered)}/{choice.partitions} partitions"
    if choice.collection != collection:
        served = f"collection {choice.collection} {served}"
    if choice.coverage < min_coverage:
        return False, f"{served} served, {min_coverage:.0%} needed"
    return True, f"{served} served"


def _ready_choice(shards: list[ShardView], collection: str) -> VersionChoice | None:
    """`collection`'s choice; when no shard reports it, the best-covered other one."""
    names = collections(shards)
    if collection in names or not names:
        return choose_version(shards, collection)
    found = [c for name in names if (c := choose_version(shards, name)) is not None]
    return max(found, key=lambda c: c.coverage, default=None)


def health(
    states: list[ShardState],
    polls: int,
    embedder: EmbedderState,
    collection: str = DEFAULT_COLLECTION,
) -> HealthResponse:
    """The cluster's health as the old `/health` shape plus shard counts and coverage
    (of `collection`, the default one).

    A configured embedder that does not answer makes a complete cluster degraded (image
    search fails; vector search works), never unhealthy.
    """
    up = sum(1 for s in states if s.up)
    counts = ShardCounts(total=len(states), up=up, down=len(states) - up)
    choice = choose_version(views(states), collection)
    status: Literal["healthy", "degraded", "unhealthy"]
    if polls == 0 or choice is None:
        status, detail = "unhealthy", "no shard serves any index version" if polls else "starting"
    elif not choice.complete:
        status, detail = "degraded", f"only {len(choice.covered)}/{choice.partitions} partitions"
    elif counts.down:
        status, detail = "degraded", f"{counts.down} of {counts.total} shards down"
    elif embedder.configured and not embedder.up:
        status, detail = "degraded", f"the embedder is down ({embedder.error}): no image search"
    else:
        status, detail = "healthy", "every partition served, every shard up"
    return HealthResponse(
        status=status,
        detail=detail,
        index_version=choice.version if choice else None,
        coverage=round(choice.coverage, 6) if choice else 0.0,
        partitions=choice.partitions if choice else None,
        total_vectors=choice.vectors if choice else 0,
        shards=counts,
        embedder=embedder.up,
        embedder_configured=embedder.configured,
        embedder_error=embedder.error,
    )


def _shard_status(
    state: ShardState, choice: VersionChoice | None, now: float, collection: str
) -> ShardStatus:
    info = state.info
    own = [v for v in info.versions if v.collection == collection] if info else []
    held = next((v for v in own if choice and v.version == choice.version), None)
    return ShardStatus(
        url=state.url,
        state="up" if state.up else ("down" if state.failures or state.info else "unknown"),
        ordinal=info.ordinal if info else None,
        replicas=info.replicas if info else None,
        versions=[v.version for v in own],
        ready=sorted(held.ready) if held else [],
        loading=sorted(held.loading) if held else [],
        vectors=held.vectors if held else 0,
        last_seen_s=round(now - state.seen_at, 3) if state.seen_at is not None else None,
        latency_ms=round(state.latency_ms, 3) if state.latency_ms is not None else None,
        error=state.error,
    )


def stats(
    states: list[ShardState],
    now: float,
    collection: str = DEFAULT_COLLECTION,
    recall: Sequence[RecallStatus] = (),
) -> StatsResponse:
    """Totals, the version queries use, every version seen, every shard's partitions (of
    `collection`, the default one), and the recall monitor's report (`recall`: every
    collection's, as `RecallMonitor.report` gives it)."""
    seen = views(states)
    choice = choose_version(seen, collection)
    probe = _probe(states, choice) if choice else None
    return StatsResponse(
        recall_probe=probe.recall_probe if probe else None,
        probe_queries=probe.probe_queries if probe else None,
        total_vectors=choice.vectors if choice else 0,
        index_version=choice.version if choice else None,
        partitions=choice.partitions if choice else None,
        coverage=round(choice.coverage, 6) if choice else 0.0,
        complete=bool(choice and choice.complete),
        model=choice.model if choice else None,
        dim=choice.dim if choice else None,
        nprobe=choice.nprobe if choice else None,
        refine=choice.refine if choice else None,
        shards=[_shard_status(s, choice, now, collection) for s in states],
        versions=[
            VersionStatus(
                version=v.version,
                partitions=v.partitions,
                coverage=round(v.coverage, 6),
                vectors=v.vectors,
            )
            for v in versions(seen, collection)
        ],
        recall=list(recall),
    )


def _probe(states: list[ShardState], choice: VersionChoice) -> ShardVersionInfo | None:
    """Any shard's report of `choice` that carries the build-time recall probe."""
    for state in states:
        for info in state.info.versions if state.info else []:
            same = (info.collection, info.version) == (choice.collection, choice.version)
            if same and info.recall_probe is not None:
                return info
    return None
