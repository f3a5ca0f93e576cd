"""Which collections the cluster serves, and their summaries (`GET /collections[/{name}]`).

Pure functions of what discovery last saw, like `status.py`, so every rule is unit-tested
without a server. A collection exists for the router when some shard reports it: a
version of it, or its name among the collections it polls (`ShardInfo.collections`; a
collection just published may have no version loaded yet). Shards that are down count
with what they last reported, so a collection whose every shard is down is "known but not
served" (503), not "unknown" (404). The default collection (`SIMSEARCH_INDEX`) is always
known: the old routes answered 503 before any index existed, and still do.
"""

from __future__ import annotations

from collections.abc import Iterable

from simsearch.common.api import (
    CollectionDetail,
    CollectionList,
    CollectionSummary,
    CollectionVersion,
)
from simsearch.common.errors import CollectionNotFound, Unavailable
from simsearch.router.registry import ShardState, views
from simsearch.router.routing import ShardView, choose_version, collections, versions

__all__ = ["check_known", "detail", "known", "listing", "summary"]


def known(states: Iterable[ShardState], default: str) -> list[str]:
    """Every collection some shard reports now or reported last (down shards too), and the
    default one, sorted."""
    names = {default}
    for state in states:
        if state.info is not None:
            names.update(state.info.collections)
            names.update(v.collection for v in state.info.versions)
    return sorted(names)


def check_known(states: Iterable[ShardState], name: str, default: str) -> None:
    """404 (`CollectionNotFound`, naming the known ones) when no shard reports `name`.

    Only while some shard is up: with every shard down the router cannot tell a typo
    from a collection it has not heard of yet, and says "unavailable" (the caller's 503).
    """
    states = list(states)
    if not any(s.up for s in states):
        return
    names = known(states, default)
    if name not in names:
        raise CollectionNotFound(
            f"no shard serves a collection {name[:80]!r}; known: {', '.join(names)}"
        )


def summary(shards: list[ShardView], name: str) -> CollectionSummary:
    """`name` as the list shows it: the version its queries use now and how complete."""
    choice = choose_version(shards, name)
    if choice is None:
        return CollectionSummary(
            name=name,
            version=None,
            vectors=0,
            partitions=None,
            dim=None,
            model=None,
            coverage=0.0,
            partial=True,
            metadata=None,
        )
    return CollectionSummary(
        name=name,
        version=choice.version,
        vectors=choice.vectors,
        partitions=choice.partitions,
        dim=choice.dim,
        model=choice.model,
        coverage=round(choice.coverage, 6),
        partial=not choice.complete,
        metadata=dict(choice.metadata) if choice.metadata is not None else None,
    )


def listing(states: Iterable[ShardState], default: str) -> CollectionList:
    """`GET /collections`: every collection a shard that is up reports, by name."""
    shards = views(states)
    return CollectionList(
        default=default, collections=[summary(shards, name) for name in collections(shards)]
    )


def detail(states: Iterable[ShardState], name: str, default: str) -> CollectionDetail:
    """`GET /collections/{name}`: the summary and every version the shards that are up
    hold; 404 naming the known collections when no shard reports `name` (`check_known`),
    503 when no shard is up to tell."""
    states = list(states)
    check_known(states, name, default)
    if name not in known(states, default):  # every shard is down: no answer either way
        raise Unavailable(f"no shard is up to say whether collection {name[:80]!r} exists")
    shards = views(states)
    return CollectionDetail(
        **summary(shards, name).model_dump(),
        versions=[
            CollectionVersion(
                version=v.version,
                live=v.live,
                partitions=v.partitions,
                coverage=round(v.coverage, 6),
                vectors=v.vectors,
            )
            for v in versions(shards, name)
        ],
    )
