"""Where a query is routed: which index version it runs on, which shard searches which partitions.

Pure functions over what the shards last reported (`ShardView`): no I/O and no clocks, so
every rule is unit-tested without a server.

Version choice follows `CURRENT`, but only onto a version that can answer in full:

1. among the fully covered versions (partitions 0..P-1 all ready on some healthy shard),
   the newest one some shard reports `live` (what CURRENT named at its last poll);
2. else the newest fully covered version;
3. else (shards down) the one with the best coverage, and the answer is flagged partial:
   a partial answer is never silent.

Why `live` first: after `simsearch index rollback`, CURRENT names an OLDER version while
shards still hold the newer one complete (they keep it until the rolled-back one is
complete again, then drain it); "newest complete" alone would keep answering from the
version the operator just rolled back from. A forward update still switches only when
complete: while a new version loads, it is live but not complete, so the old complete
one keeps answering (rule 2), and the router moves as soon as the new one is complete —
never to half of it. Shards that do not report `live` (older ones) make rule 1 empty and
the choice is the newest complete version, as before. While shards disagree (some polled
the new CURRENT, some not yet), both versions may be live; the newest of them answers
until the last shard polls (`POST /admin/reload` makes that immediate).

Collections: every rule is applied to one collection (a named index) at a time. A shard
reports the versions of every collection it holds, each tagged with its collection
(`ShardVersionInfo.collection`); `versions` and `choose_version` only look at the
versions of the collection they are asked about, so two collections never mix, even when
their version ids happen to be equal (the view is keyed by (collection, version)).

Partition assignment: `assign` (over `placement.assign_partitions`) gives every partition
to exactly one shard that has it ready, balanced, so a partition ready on two shards during
a rebalance (or with replication) is searched once and no hit is returned twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

from simsearch.common.metadata import FieldType
from simsearch.common.placement import assign_partitions
from simsearch.common.wire import ShardVersionInfo

__all__ = [
    "DEFAULT_COLLECTION",
    "Assignment",
    "ShardView",
    "VersionChoice",
    "assign",
    "choose_version",
    "collections",
    "versions",
]

DEFAULT_COLLECTION = "default"  # what a shard's report means without a collection (the wire's)


@dataclass(frozen=True)
class ShardView:
    """One healthy shard as routing sees it: its URL and what it holds per
    (collection, version), and the collections it polls (some may have no version yet)."""

    url: str
    versions: Mapping[tuple[str, str], ShardVersionInfo]
    polled: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def of(
        cls, url: str, infos: Iterable[ShardVersionInfo], polled: Iterable[str] = ()
    ) -> ShardView:
        """The view of a shard that reports `infos` (each tagged with its collection)."""
        return cls(url, {(i.collection, i.version): i for i in infos}, frozenset(polled))


@dataclass(frozen=True)
class VersionChoice:
    """One index version and who can serve each of its partitions right now."""

    version: str
    partitions: int  # P
    dim: int
    nprobe: int
    refine: int
    model: str
    holders: Mapping[str, frozenset[int]]  # shard URL -> ready partitions of this version
    vectors: int = 0  # vectors in the covered partitions (counted once per partition)
    covered: frozenset[int] = field(default_factory=frozenset)
    live: bool = False  # some healthy shard reports CURRENT names this version
    collection: str = DEFAULT_COLLECTION
    metadata: Mapping[str, FieldType] | None = None  # the fields a filter may use (None: none)

    @property
    def coverage(self) -> float:
        """Covered partitions / P: 1.0 when every partition has a ready holder."""
        return len(self.covered) / self.partitions

    @property
    def complete(self) -> bool:
        """Every partition 0..P-1 is ready on at least one healthy shard."""
        return len(self.covered) == self.partitions

    def holders_of(self, partition: int) -> list[str]:
        """Shards that have `partition` ready, in URL order (for item look-ups)."""
        return sorted(url for url, ready in self.holders.items() if partition in ready)


@dataclass(frozen=True)
class Assignment:
    """The partitions each shard is asked for, and those nobody can answer."""

    by_shard: dict[str, list[int]]  # shard URL -> its partitions, sorted; only shards with some
    uncovered: list[int]


def collections(shards: Iterable[ShardView]) -> list[str]:
    """Every collection some shard reports a version of or polls, sorted."""
    names: set[str] = set()
    for shard in shards:
        names.update(name for name, _ in shard.versions)
        names.update(shard.polled)
    return sorted(names)


def versions(
    shards: Iterable[ShardView], collection: str = DEFAULT_COLLECTION
) -> list[VersionChoice]:
    """Every version of `collection` some healthy shard reports, newest first, with its
    coverage.

    P, dim, search parameters and the metadata schema are taken from the most common
    report for the version (they come from one manifest, so shards agree unless one is
    broken); partitions a shard lists outside 0..P-1 are ignored rather than trusted.
    """
    reports: dict[str, list[tuple[str, ShardVersionInfo]]] = {}
    for shard in shards:
        for (name, version), info in shard.versions.items():
            if name == collection:
                reports.setdefault(version, []).append((shard.url, info))
    return [_choice(collection, v, reports[v]) for v in sorted(reports, reverse=True)]


def _schema(reports: list[tuple[str, ShardVersionInfo]]) -> dict[str, FieldType] | None:
    """The metadata schema most shards report for a version (None when most report none)."""
    counts = Counter(
        None if i.metadata is None else tuple(sorted(i.metadata.items())) for _, i in reports
    )
    common = counts.most_common(1)[0][0]
    return None if common is None else dict(common)


def _choice(
    collection: str, name: str, reports: list[tuple[str, ShardVersionInfo]]
) -> VersionChoice:
    """Fold every shard's report of one version into a `VersionChoice`."""
    shape = Counter((i.partitions, i.dim, i.nprobe, i.refine, i.model) for _, i in reports)
    p, dim, nprobe, refine, model = shape.most_common(1)[0][0]
    holders: dict[str, frozenset[int]] = {}
    totals: dict[str, int] = {}
    for url, info in reports:
        ready = frozenset(x for x in info.ready if 0 <= x < p)
        if (info.partitions, info.dim) == (p, dim) and ready:
            holders[url] = ready
            totals[url] = info.vectors
    covered = frozenset().union(*holders.values()) if holders else frozenset()
    return VersionChoice(
        version=name,
        partitions=p,
        dim=dim,
        nprobe=nprobe,
        refine=refine,
        model=model,
        holders=holders,
        vectors=_count_vectors(holders, totals),
        covered=covered,
        live=any(info.live for _, info in reports),
        collection=collection,
        metadata=_schema(reports),
    )


def _count_vectors(holders: Mapping[str, frozenset[int]], totals: Mapping[str, int]) -> int:
    """Vectors in the covered partitions, each partition counted once.

    A shard reports one total for all its ready partitions. Without overlap the sum is
    exact; when partitions are held twice (replication, rebalancing) each shard's total is
    spread evenly over its partitions (ids hash uniformly) and every partition is counted
    at its first holder, which is an estimate.
    """
    if sum(len(r) for r in holders.values()) == len(frozenset().union(*holders.values())):
        return sum(totals.values())
    per_partition: dict[int, float] = {}
    for url in sorted(holders):
        share = totals[url] / len(holders[url])
        for x in holders[url]:
            per_partition.setdefault(x, share)
    return round(sum(per_partition.values()))


def choose_version(
    shards: Iterable[ShardView], collection: str = DEFAULT_COLLECTION
) -> VersionChoice | None:
    """The newest fully covered live version of `collection`; else its newest fully covered
    one; else its best-covered one (newest on a tie). See the module docstring for why, in
    that order.

    None when no healthy shard has any partition of any version of `collection` ready.
    """
    candidates = [c for c in versions(shards, collection) if c.covered]
    if not candidates:
        return None
    complete = [c for c in candidates if c.complete]
    live = [c for c in complete if c.live]
    if live:
        return live[0]  # `versions` is newest first; version ids sort by time
    if complete:
        return complete[0]
    return max(candidates, key=lambda c: (c.coverage, c.version))


def assign(
    choice: VersionChoice,
    partitions: Iterable[int] | None = None,
    exclude: Collection[str] = (),
    prefer: Callable[[str], float] | None = None,
) -> Assignment:
    """Give each wanted partition (default: all of them) to one shard that has it ready.

    `exclude` leaves out shards that just failed (a retry round is assigned around them);
    `prefer` breaks ties between equally loaded shards (lower is better, e.g. latency).
    """
    wanted = range(choice.partitions) if partitions is None else partitions
    available = {url: ready for url, ready in choice.holders.items() if url not in exclude}
    by_shard, uncovered = assign_partitions(wanted, available, prefer)
    return Assignment(by_shard, uncovered)
