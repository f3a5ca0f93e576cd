"""Which shard holds which partition, and which shard answers each partition of a query.

Placement is rendezvous (highest-random-weight) hashing: every (partition, ordinal) pair
gets a pseudo-random 64-bit weight, and the `R` ordinals with the highest weights hold the
partition. Shards and the router compute the same answer independently from three small
numbers (P partitions, N replicas, R replication) without talking to each other or to a
coordinator, and growing N → N+1 only gives partitions to the new ordinal (~R·P/(N+1) of
them); no other shard has to load anything.

Everything here is a pure function: no I/O, no clocks, no randomness beyond a fixed hash,
so a shard's view and the router's view cannot disagree as long as they see the same N.

`plan_query` is the router's side: given what each ready shard can serve *now* (which,
during a rebalance, is more than the placement says), it gives each requested partition to
exactly one shard so that nothing is searched twice and the work is spread evenly.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import operator
import struct
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping
from typing import Any, Protocol, SupportsIndex, TypeVar

from simsearch.common.errors import InvalidParameter

__all__ = [
    "assignment",
    "holders",
    "moved",
    "partitions_for",
    "plan_query",
    "weight",
]

# Fixed, documented encoding of a (partition, ordinal) pair: two little-endian unsigned
# 64-bit integers, hashed with BLAKE2b (8-byte digest) personalised with this tag. Changing
# any of it reshuffles every index in every cluster, so the unit tests pin known weights.
_PAIR = struct.Struct("<QQ")
_PERSON = b"simsearch-hrw-v1"  # BLAKE2b allows at most 16 bytes of personalisation
_U64_LIMIT = 1 << 64


class _ShardKey(Hashable, Protocol):
    """A shard key the planner can use: hashable (dict key) and orderable (tie-break)."""

    def __lt__(self, other: Any, /) -> bool: ...


K = TypeVar("K", bound=_ShardKey)


def _as_int(name: str, value: object, low: int, high: int | None = None) -> int:
    """Return `value` as an int in [low, high), or raise InvalidParameter naming it.

    Accepts anything with `__index__` (numpy integers, for instance) but refuses bool and
    float, because `True` partitions or `2.0` replicas are a caller's bug, not a value.
    """
    if isinstance(value, bool):
        raise InvalidParameter(f"{name} must be an integer, got bool {value!r}")
    if not isinstance(value, SupportsIndex):
        raise InvalidParameter(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    number = operator.index(value)
    if number < low or (high is not None and number >= high):
        upper = "" if high is None else f" and < {high}"
        raise InvalidParameter(f"{name} must be >= {low}{upper}, got {number}")
    return int(number)


def weight(partition: int, ordinal: int) -> int:
    """Deterministic 64-bit rendezvous weight of `ordinal` for `partition`.

    BLAKE2b of a fixed byte encoding rather than `hash()`: Python's hash is salted per
    process for str/bytes and is allowed to change between versions and platforms, while
    every shard and the router, possibly on different images, must agree on placement.
    """
    p = _as_int("partition", partition, 0, _U64_LIMIT)
    o = _as_int("ordinal", ordinal, 0, _U64_LIMIT)
    return _weight(p, o)


def _weight(partition: int, ordinal: int) -> int:
    """`weight` without validation: the inner loops call it P·N times on checked ints."""
    digest = hashlib.blake2b(_PAIR.pack(partition, ordinal), digest_size=8, person=_PERSON)
    return int.from_bytes(digest.digest(), "big")


def _holders(partition: int, replicas: int, replication: int) -> list[int]:
    """`holders` without validation, for the loops that already validated their inputs."""
    count = min(replication, replicas)
    if count == 1:
        return [max(range(replicas), key=lambda o: (_weight(partition, o), -o))]
    return heapq.nsmallest(count, range(replicas), key=lambda o: (-_weight(partition, o), o))


def holders(partition: int, replicas: int, replication: int = 1) -> list[int]:
    """Ordinals that hold `partition`, best (highest weight) first.

    The top min(replication, replicas) ordinals of range(replicas) by weight, ties broken by
    the lower ordinal (a 64-bit collision is practically impossible, but the order must
    still be total). Best first so that the first entry is the natural primary holder.
    `replication > replicas` is allowed and capped: every ordinal then holds everything,
    which is what a small cluster with a large configured R should do.
    """
    p = _as_int("partition", partition, 0, _U64_LIMIT)
    n = _as_int("replicas", replicas, 1)
    r = _as_int("replication", replication, 1)
    return _holders(p, n, r)


def assignment(partitions: int, replicas: int, replication: int = 1) -> dict[int, list[int]]:
    """Map every ordinal 0..replicas-1 to the sorted partitions it holds.

    Every ordinal is a key, even one that happens to hold nothing (possible when P is small
    relative to N), so callers can iterate the whole StatefulSet without `.get` defaults.
    """
    total = _as_int("partitions", partitions, 1)
    n = _as_int("replicas", replicas, 1)
    r = _as_int("replication", replication, 1)
    held: dict[int, list[int]] = {o: [] for o in range(n)}
    for p in range(total):  # ascending, so each list comes out sorted
        for o in _holders(p, n, r):
            held[o].append(p)
    return held


def partitions_for(ordinal: int, partitions: int, replicas: int, replication: int = 1) -> list[int]:
    """Sorted partitions that shard `ordinal` holds: what that shard downloads and loads."""
    total = _as_int("partitions", partitions, 1)
    n = _as_int("replicas", replicas, 1)
    r = _as_int("replication", replication, 1)
    o = _as_int("ordinal", ordinal, 0, n)
    return [p for p in range(total) if o in _holders(p, n, r)]


def moved(partitions: int, before: int, after: int, replication: int = 1) -> set[tuple[int, int]]:
    """(partition, ordinal) pairs held with `after` replicas but not with `before`.

    That is the work a scale from `before` to `after` causes: each pair is a partition some
    shard must load before the old holder may drop it (make-before-break). With HRW, growing
    only yields pairs on the new ordinals, and shrinking only re-homes what the removed
    ordinals held.
    """
    total = _as_int("partitions", partitions, 1)
    old = _as_int("before", before, 1)
    new = _as_int("after", after, 1)
    r = _as_int("replication", replication, 1)
    result: set[tuple[int, int]] = set()
    for p in range(total):
        had = set(_holders(p, old, r))
        result.update((p, o) for o in _holders(p, new, r) if o not in had)
    return result


def plan_query(
    partitions: Iterable[int],
    available: Mapping[K, Collection[int]],
    prefer: Callable[[K], float] | None = None,
) -> tuple[dict[K, list[int]], list[int]]:
    """Give each requested partition to exactly one shard that can serve it now.

    `available` maps a shard key (an ordinal, a URL, anything hashable and orderable) to the
    partitions that shard has ready. During a rebalance a partition may be ready on its old
    and its new holder; searching it on both would return duplicate hits, so each partition
    goes to exactly one shard. Greedy balancing: partitions with the fewest candidates are
    placed first (they have no choice, so they must not find their only shard already
    loaded), and each goes to the candidate with the fewest partitions so far; ties go to
    the lower `prefer` score (e.g. recent latency; NaN counts as worst), then the lower key.
    `prefer` is called at most once per shard, so a score that moves while we plan cannot
    make the plan inconsistent.

    Returns (shard -> sorted partitions, only for shards given at least one; uncovered
    partitions, sorted). Duplicate requested partitions are planned once. The result depends
    only on the inputs, not on the iteration order of `available`.
    """
    wanted = sorted(set(partitions))
    keys = sorted(available)
    candidates: dict[int, list[K]] = {p: [] for p in wanted}
    for key in keys:  # sorted, so each candidate list is in key order
        for p in set(available[key]):
            if p in candidates:
                candidates[p].append(key)

    score: dict[K, float] = {}
    if prefer is not None:
        for key in keys:
            value = float(prefer(key))
            score[key] = math.inf if math.isnan(value) else value
    rank = {key: i for i, key in enumerate(keys)}
    load = dict.fromkeys(keys, 0)

    plan: dict[K, list[int]] = {}
    uncovered: list[int] = []
    for p in sorted(wanted, key=lambda q: (len(candidates[q]), q)):
        options = candidates[p]
        if not options:
            uncovered.append(p)
            continue
        best = min(options, key=lambda k: (load[k], score.get(k, 0.0), rank[k]))
        load[best] += 1
        plan.setdefault(best, []).append(p)

    ordered = {key: sorted(plan[key]) for key in keys if key in plan}
    return ordered, sorted(uncovered)
