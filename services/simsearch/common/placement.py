"""Which shard holds which partition, and which shard answers each partition of a query.

Shards and the router compute placement independently from three small numbers (P
partitions, N replicas, R replication) without talking to each other or to a coordinator,
so it must be a pure, deterministic function of (P, N, R): no I/O, no clocks, no randomness
beyond a fixed hash. A shard's view and the router's view cannot disagree as long as they
see the same N.

Why not rendezvous (HRW) hashing, which this module used to do: HRW is balanced only
statistically: with 8 partitions per shard the per-shard counts deviate from the mean by
about ±35 % (√8/8) typically and much more at the extremes (P=64, N=8 gave [8, 9, 11, 8,
7, 6, 12, 3]), and no choice of hash fixes that.

The placement is instead an incremental "steal" construction, replayed by everybody from
(P, N, R). Let r(N) = min(R, N) and A(N) the set of partitions each ordinal holds:

* A(1): ordinal 0 holds all P partitions.
* A(n+1) from A(n), where the new ordinal is n:
  - if n < R (so r(n+1) > r(n)), every ordinal holds everything; n takes all P and nobody
    loses anything;
  - otherwise n takes exactly T = floor(r·P / (n+1)) partition slots, one at a time. Each
    time the donor is the most-loaded old ordinal that holds a partition n does not hold
    yet, and n takes that donor's partition with the highest affinity `_weight(p, n)` (so
    which partitions move is pseudo-random, not the low numbers). Ties between equally loaded
    donors go to the one offering the higher weight, then to the lower ordinal.

Properties (the unit tests check them over N = 1..32, R = 1..3, several P):

* Balance: loads differ by at most one slot, for every P and N. By induction the old loads
  are within one of each other; stealing from the most loaded keeps them so, and because n
  ends with the floor share, every old ordinal keeps at least as many as n. The most-loaded
  old ordinal always holds more partitions than n while n is below its share, so it always
  has one to give and the "holds a partition n lacks" rule never has to skip anybody.
* Minimal movement: growing n → n+1 loads exactly T ≈ r·P/(n+1) pairs, all on the new
  ordinal; survivors only lose. Shrinking n+1 → n undoes exactly that step: the removed
  ordinal's T partitions go back to the shards they came from, nobody else changes.
* Every partition has exactly r(N) distinct holders (a steal moves a slot from a holder to
  a shard that did not hold the partition).

Cost: replaying A(1)..A(N) hashes P·N pairs and does about r·P·ln N heap operations
(P=1024, N=64, R=3: ~0.15 s the first time on one core, ~0.1 ms after). Each step and each
result is cached per (P, N, R) with `functools.lru_cache` and handed out as immutable
tuples, so a shard calling `partitions_for` on every poll tick pays once, and A(N+1) after
A(N) costs one step.

`assign_partitions` is the router's side: given what each ready shard can serve *now*
(which, during a rebalance, is more than the placement says), it gives each requested
partition to exactly one shard so that nothing is searched twice and the work is spread
evenly.

Public surface: `partitions_for` (what one shard loads), `assignment` (the whole table,
from the same cache) and `assign_partitions`. The affinity `_weight` is private but pinned
by the tests: the construction orders its steals by it, so it must never change.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import math
import operator
import struct
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping
from typing import Any, Protocol, SupportsIndex, TypeVar

from simsearch.common.errors import InvalidParameter

__all__ = ["assign_partitions", "assignment", "partitions_for"]

# Fixed, documented encoding of a (partition, ordinal) pair: two little-endian unsigned
# 64-bit integers, hashed with BLAKE2b (8-byte digest) personalised with this tag. Changing
# any of it reshuffles every index in every cluster, so the unit tests pin known weights.
# The tag keeps its HRW-era name for that reason: it is data, not a description.
_PAIR = struct.Struct("<QQ")
_PERSON = b"simsearch-hrw-v1"  # BLAKE2b allows at most 16 bytes of personalisation


class _ShardKey(Hashable, Protocol):
    """A shard key `assign_partitions` can use: hashable (dict key) and orderable (tie-break)."""

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


def _weight(partition: int, ordinal: int) -> int:
    """Deterministic 64-bit affinity of `ordinal` for `partition` (on checked ints).

    A joining ordinal takes, from each donor, the partition it has the highest affinity
    for. BLAKE2b of a fixed byte encoding rather than `hash()`: Python's hash is salted per
    process for str/bytes and may change between versions and platforms, while every shard
    and the router, possibly on different images, must agree on placement. Unvalidated:
    the construction calls it P·N times on ints it has checked.
    """
    digest = hashlib.blake2b(_PAIR.pack(partition, ordinal), digest_size=8, person=_PERSON)
    return int.from_bytes(digest.digest(), "big")


# A(N) is built on A(N-1), so a sweep over N (or `assignment(P, N+1)` after `assignment(P, N)`)
# replays each step once. Every _CHECKPOINT-th table is built first, bottom up, so the
# recursion is at most _CHECKPOINT deep whatever N is; the step cache must outlive that.
_CHECKPOINT = 32


@functools.lru_cache(maxsize=2 * _CHECKPOINT)
def _step(partitions: int, replicas: int, replication: int) -> tuple[frozenset[int], ...]:
    """A(replicas) from A(replicas - 1), on validated ints (see the module docstring)."""
    if replicas == 1:
        return (frozenset(range(partitions)),)
    held = [set(ps) for ps in _step(partitions, replicas - 1, replication)]
    new = replicas - 1  # the ordinal that joins
    if new < replication:  # r grows with N: the newcomer holds everything, nobody loses
        held.append(set(range(partitions)))
    else:
        held.append(_steal(held, new, partitions, replication * partitions // replicas))
    return tuple(frozenset(ps) for ps in held)


@functools.lru_cache(maxsize=16)
def _table(partitions: int, replicas: int, replication: int) -> tuple[tuple[int, ...], ...]:
    """Ordinal -> its partitions, ascending: A(replicas) as handed out to callers."""
    for k in range(_CHECKPOINT, replicas, _CHECKPOINT):  # bound the recursion depth
        _step(partitions, k, replication)
    return tuple(tuple(sorted(ps)) for ps in _step(partitions, replicas, replication))


def _steal(held: list[set[int]], new: int, partitions: int, take: int) -> set[int]:
    """Move `take` slots from the old ordinals in `held` to ordinal `new`; return its set.

    Each donor keeps a min-heap of its partitions' ranks in `new`'s preference order (rank 0
    = highest `_weight(p, new)`). The donor heap is keyed (-load, best rank, ordinal) and
    lazily corrected: loads only fall and ranks of what is left only rise, so a stale key is
    never worse than the truth; a popped donor whose key is stale is pushed back corrected.
    """
    order = sorted(range(partitions), key=lambda p: (-_weight(p, new), p))
    rank = [0] * partitions
    for i, p in enumerate(order):
        rank[p] = i
    ranks = [[rank[p] for p in ps] for ps in held]
    donors: list[tuple[int, int, int]] = []
    for d, heap in enumerate(ranks):
        heapq.heapify(heap)
        if heap:
            donors.append((-len(heap), heap[0], d))
    heapq.heapify(donors)
    mine: set[int] = set()
    while len(mine) < take:
        key = heapq.heappop(donors)  # never empty: see "Balance" in the module docstring
        d = key[2]
        heap = ranks[d]
        while heap and order[heap[0]] in mine:  # replicated elsewhere and taken already
            heapq.heappop(heap)
        if not heap:
            continue  # holds nothing `new` lacks: not a donor any more
        actual = (-len(held[d]), heap[0], d)
        if actual != key:
            heapq.heappush(donors, actual)
            continue
        p = order[heapq.heappop(heap)]
        held[d].remove(p)
        mine.add(p)
        if heap:
            heapq.heappush(donors, (-len(held[d]), heap[0], d))
    return mine


def assignment(partitions: int, replicas: int, replication: int = 1) -> dict[int, list[int]]:
    """Map every ordinal 0..replicas-1 to the sorted partitions it holds.

    Every ordinal is a key, even one that holds nothing (possible when r·P < N: the newest
    ordinals' floor share is then zero), so callers can iterate the whole StatefulSet
    without `.get` defaults.
    """
    total = _as_int("partitions", partitions, 1)
    n = _as_int("replicas", replicas, 1)
    r = _as_int("replication", replication, 1)
    return {o: list(ps) for o, ps in enumerate(_table(total, n, r))}


def partitions_for(ordinal: int, partitions: int, replicas: int, replication: int = 1) -> list[int]:
    """Sorted partitions that shard `ordinal` holds: what that shard downloads and loads."""
    total = _as_int("partitions", partitions, 1)
    n = _as_int("replicas", replicas, 1)
    r = _as_int("replication", replication, 1)
    o = _as_int("ordinal", ordinal, 0, n)
    return list(_table(total, n, r)[o])


def assign_partitions(
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
    `prefer` is called at most once per shard, so a score that moves while we assign cannot
    make the assignment inconsistent.

    Returns (shard -> sorted partitions, only for shards given at least one; uncovered
    partitions, sorted). Duplicate requested partitions are assigned once. The result depends
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

    given: dict[K, list[int]] = {}
    uncovered: list[int] = []
    for p in sorted(wanted, key=lambda q: (len(candidates[q]), q)):
        options = candidates[p]
        if not options:
            uncovered.append(p)
            continue
        best = min(options, key=lambda k: (load[k], score.get(k, 0.0), rank[k]))
        load[best] += 1
        given.setdefault(best, []).append(p)

    ordered = {key: sorted(given[key]) for key in keys if key in given}
    return ordered, sorted(uncovered)
