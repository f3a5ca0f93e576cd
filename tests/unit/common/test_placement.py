"""Steal placement: stable, complete, balanced to one slot, moves little; the assignment of
a query's partitions to shards is exact."""

from __future__ import annotations

import math

import pytest

from simsearch.common.errors import InvalidParameter
from simsearch.common.http import status_for
from simsearch.common.placement import _weight as weight
from simsearch.common.placement import assign_partitions, assignment, partitions_for


def moved(partitions: int, before: int, after: int, replication: int = 1) -> set[tuple[int, int]]:
    """(partition, ordinal) pairs held with `after` replicas but not with `before`: the
    loads a scale from `before` to `after` causes (make-before-break), from the tables."""
    had, has = (
        assignment(partitions, before, replication),
        assignment(partitions, after, replication),
    )
    return {(p, o) for o, ps in has.items() for p in ps if p not in had.get(o, [])}


# --- determinism ------------------------------------------------------------------------


def test_weight_is_pinned() -> None:
    # Computed once from the blake2b encoding. If these change, every deployed index is
    # reshuffled: that has to be a deliberate, versioned decision, never an accident.
    assert weight(0, 0) == 7279453627220634893
    assert weight(0, 1) == 14286047349638921225
    assert weight(1, 0) == 12275456259571633651
    assert weight(63, 7) == 11753984377221635983


def test_weight_is_64_bit() -> None:
    values = {weight(p, o) for p in range(32) for o in range(8)}
    assert len(values) == 32 * 8
    assert all(0 <= v < 2**64 for v in values)
    assert weight(2**64 - 1, 2**64 - 1) == weight(2**64 - 1, 2**64 - 1)


def test_same_inputs_same_outputs() -> None:
    assert assignment(64, 5, 2) == assignment(64, 5, 2)
    assert partitions_for(4, 64, 5, 2) == partitions_for(4, 64, 5, 2)


def test_results_are_fresh_copies_of_the_cache() -> None:
    # Shards poll partitions_for every tick and the answer is cached: a caller that mutates
    # what it got must not change what the next caller gets.
    table = assignment(24, 3)
    table[0].append(99)
    partitions_for(1, 24, 3).clear()
    assert assignment(24, 3) == {0: sorted(table[0][:-1]), 1: table[1], 2: table[2]}
    assert partitions_for(1, 24, 3) == table[1] != []


def test_small_assignments_are_pinned() -> None:
    # Computed once from the construction. A change reshuffles deployed indexes, exactly
    # like a change of `weight`: it must be deliberate.
    assert assignment(16, 4) == {
        0: [1, 2, 5, 12],
        1: [0, 3, 4, 15],
        2: [6, 8, 10, 13],
        3: [7, 9, 11, 14],
    }
    assert assignment(12, 3, 2) == {
        0: [0, 1, 2, 4, 7, 9, 10, 11],
        1: [1, 3, 4, 5, 6, 7, 8, 11],
        2: [0, 2, 3, 5, 6, 8, 9, 10],
    }
    assert moved(16, 3, 4) == {(7, 3), (9, 3), (11, 3), (14, 3)}
    assert moved(16, 4, 3) == {(7, 0), (9, 0), (11, 1), (14, 2)}


def _reference(partitions: int, replicas: int, replication: int) -> dict[int, list[int]]:
    """The construction as the module docstring words it, one slot at a time, no heaps."""
    held: list[set[int]] = [set(range(partitions))]
    for new in range(1, replicas):
        if new < replication:
            held.append(set(range(partitions)))
            continue
        mine: set[int] = set()
        for _ in range(replication * partitions // (new + 1)):
            # most loaded donor first, then the highest weight for `new`, then the lower
            # partition and the lower ordinal
            _, _, p, d = min(
                (-len(held[d]), -weight(p, new), p, d) for d in range(new) for p in held[d] - mine
            )
            held[d].remove(p)
            mine.add(p)
        held.append(mine)
    return {o: sorted(ps) for o, ps in enumerate(held)}


@pytest.mark.parametrize("replication", [1, 2, 3])
@pytest.mark.parametrize("partitions", [5, 8, 13, 40])
def test_matches_the_documented_construction(partitions: int, replication: int) -> None:
    for replicas in range(1, 7):
        assert assignment(partitions, replicas, replication) == _reference(
            partitions, replicas, replication
        )


def test_large_replica_counts_do_not_hit_the_recursion_limit() -> None:
    # Each step is built on the previous one; checkpoints keep the recursion shallow.
    loads = [len(ps) for ps in assignment(16, 600).values()]
    assert sorted(loads) == [0] * 584 + [1] * 16


# --- completeness -----------------------------------------------------------------------


@pytest.mark.parametrize(("partitions", "replicas", "replication"), [
    (1, 1, 1), (64, 1, 1), (64, 3, 1), (64, 5, 2), (64, 4, 3), (10, 8, 1), (64, 3, 7), (7, 7, 7),
    (3, 8, 2), (10, 8, 3)
])  # fmt: skip
def test_every_partition_has_min_r_n_distinct_holders(
    partitions: int, replicas: int, replication: int
) -> None:
    want = min(replication, replicas)
    table = assignment(partitions, replicas, replication)
    assert sorted(table) == list(range(replicas))  # every ordinal present, even if empty
    for p in range(partitions):
        assert len({o for o, ps in table.items() if p in ps}) == want
    for o in range(replicas):
        assert table[o] == partitions_for(o, partitions, replicas, replication)
        assert table[o] == sorted(table[o])
    assert set().union(*table.values()) == set(range(partitions))
    assert sum(len(ps) for ps in table.values()) == want * partitions
    loads = [len(ps) for ps in table.values()]
    assert max(loads) - min(loads) <= 1  # even when P is small next to N


def test_replication_beyond_replicas_means_everyone_holds_everything() -> None:
    table = assignment(16, 3, 5)
    assert all(ps == list(range(16)) for ps in table.values())


# --- balance and movement over many N ---------------------------------------------------

# Measured over every case below (402 (P, N, R) with P >= 8N): loads differ by at most one
# slot; the worst deviation from the mean is 11.2 % (P=8N+3, where the mean is fractional);
# |moved(N -> N+1)| / (r·P/(N+1)) is 0.906..1.000 and |moved(N+1 -> N)| / (r·P/N) <= 0.969.
# HRW at P=64, N=8 was [8, 9, 11, 8, 7, 6, 12, 3]: -62 % .. +50 %.


def _cases(size: str) -> list[tuple[int, int]]:
    """(P, N) for N = 1..32 where P >= 8N, N ascending so each P replays its chain once."""
    cases = []
    for n in range(1, 33):
        p = {"8N": 8 * n, "8N+3": 8 * n + 3}.get(size) or int(size)
        if p >= 8 * n:
            cases.append((p, n))
    return cases


@pytest.mark.parametrize("replication", [1, 2, 3])
@pytest.mark.parametrize("size", ["8N", "8N+3", "64", "256", "1024"])
def test_balanced_complete_and_minimal_over_many_n(size: str, replication: int) -> None:
    for partitions, n in _cases(size):
        r, grown_r = min(replication, n), min(replication, n + 1)
        old = assignment(partitions, n, replication)
        new = assignment(partitions, n + 1, replication)

        # complete: every partition on exactly r distinct ordinals
        counts = [0] * partitions
        for ps in old.values():
            for p in ps:
                counts[p] += 1
        assert counts == [r] * partitions

        # balanced: within one slot, hence well within ±30 % of the mean at P >= 8N
        loads = [len(ps) for ps in old.values()]
        mean = r * partitions / n
        assert max(loads) - min(loads) <= 1
        assert max(abs(x - mean) for x in loads) <= 0.3 * mean

        # growing: only the new ordinal gains, survivors only lose, about r·P/(N+1) moves
        gained = moved(partitions, n, n + 1, replication)
        assert {o for _, o in gained} <= {n}
        assert {p for p, _ in gained} == set(new[n])
        assert all(set(new[o]) <= set(old[o]) for o in range(n))
        expected = partitions if n < replication else r * partitions // (n + 1)
        assert len(gained) == expected <= 1.5 * grown_r * partitions / (n + 1)

        # shrinking back: only what the removed ordinal held is re-homed, once each, and
        # each goes back to a survivor (the one it was taken from)
        back = moved(partitions, n + 1, n, replication)
        assert all(o < n for _, o in back)
        assert all(p not in new[o] and p in old[o] for p, o in back)
        if n < replication:
            assert back == set()  # everyone already held everything
        else:
            assert sorted(p for p, _ in back) == new[n]
        assert len(back) <= 1.5 * r * partitions / n


def test_moved_same_size_is_empty() -> None:
    assert moved(64, 4, 4, 2) == set()


def test_moved_over_several_steps() -> None:
    # 2 -> 5 in one go: exactly the pairs the new ordinals hold plus nothing on survivors.
    old, new = assignment(64, 2, 2), assignment(64, 5, 2)
    gained = moved(64, 2, 5, 2)
    assert gained == {(p, o) for o in (2, 3, 4) for p in new[o]}
    assert all(set(new[o]) <= set(old[o]) for o in (0, 1))


# --- assign_partitions ---------------------------------------------------------------------


def _check_exact(
    given: dict[str, list[int]] | dict[int, list[int]],
    uncovered: list[int],
    wanted: set[int],
    available: dict[str, set[int]] | dict[int, set[int]],
) -> None:
    seen: list[int] = []
    for key, ps in given.items():
        assert ps, "shards with nothing to do are left out"
        assert ps == sorted(ps)
        assert set(ps) <= set(available[key])  # type: ignore[index]
        seen.extend(ps)
    assert len(seen) == len(set(seen))  # exactly one shard per partition
    assert set(seen) | set(uncovered) == wanted
    assert not set(seen) & set(uncovered)
    assert uncovered == sorted(uncovered)


def test_assignment_follows_placement_when_only_owners_are_ready() -> None:
    table = assignment(64, 4)
    available = {o: set(ps) for o, ps in table.items()}
    given, uncovered = assign_partitions(range(64), available)
    assert uncovered == []
    assert given == {o: ps for o, ps in table.items() if ps}


def test_assignment_reports_uncovered_partitions() -> None:
    available = {0: {0, 1, 2}, 1: {2, 3}}
    given, uncovered = assign_partitions([5, 3, 0, 1, 2, 4, 3], available)
    _check_exact(given, uncovered, {0, 1, 2, 3, 4, 5}, available)
    assert uncovered == [4, 5]
    assert given == {0: [0, 1], 1: [2, 3]}


def test_assignment_places_constrained_partitions_first() -> None:
    # Partition 0 is everywhere, 1..3 only on shard "a": a naive in-order greedy would give
    # 0 to "a" too. Fewest-candidates-first leaves "a" for the partitions that need it.
    available = {"a": {0, 1, 2, 3}, "b": {0}}
    given, uncovered = assign_partitions(range(4), available)
    assert given == {"a": [1, 2, 3], "b": [0]}
    assert uncovered == []


def test_assignment_with_full_replication_is_even() -> None:
    available = {o: set(range(64)) for o in range(3)}
    given, uncovered = assign_partitions(range(64), available)
    _check_exact(given, uncovered, set(range(64)), available)
    loads = [len(ps) for ps in given.values()]
    assert len(loads) == 3
    assert max(loads) - min(loads) <= 1


def test_assignment_during_rebalance_is_exact_and_balanced() -> None:
    # Growing 4 -> 5 with R=2: old holders still serve, the new ordinal already has its share.
    old, new = assignment(64, 4, 2), assignment(64, 5, 2)
    available = {o: set(old.get(o, [])) | set(new[o]) for o in range(5)}
    given, uncovered = assign_partitions(range(64), available)
    _check_exact(given, uncovered, set(range(64)), available)
    assert uncovered == []
    loads = [len(ps) for ps in given.values()]
    assert max(loads) - min(loads) <= 1


def test_prefer_breaks_ties_and_is_called_once_per_shard() -> None:
    urls = ["http://shard-0:8080", "http://shard-1:8080", "http://shard-2:8080"]
    available = {u: {0, 1, 2, 3} for u in urls}
    calls: list[str] = []
    latency = {urls[0]: 0.030, urls[1]: 0.010, urls[2]: 0.020}

    def prefer(url: str) -> float:
        calls.append(url)
        return latency[url]

    given, uncovered = assign_partitions([0], available, prefer)
    assert given == {urls[1]: [0]}
    assert uncovered == []
    assert sorted(calls) == sorted(urls)

    given, _ = assign_partitions(range(4), available, prefer)
    # loads first (1,1,2), then latency: the fastest shard takes the extra partition
    assert given == {urls[1]: [0, 3], urls[2]: [1], urls[0]: [2]}

    nan_given, _ = assign_partitions([0], available, lambda u: math.nan if u == urls[0] else 1.0)
    assert nan_given == {urls[1]: [0]}  # NaN counts as worst, then key order


def test_assignment_without_prefer_breaks_ties_by_key_and_ignores_mapping_order() -> None:
    a = {"b": {0, 1}, "a": {0, 1}, "c": {1}}
    b = {"c": {1}, "a": {0, 1}, "b": {0, 1}}
    given_a, _ = assign_partitions([1, 0], a)
    given_b, _ = assign_partitions([0, 1], b)
    assert given_a == given_b == {"a": [0], "b": [1]}  # 0 (2 holders) first, then b < c
    assert list(given_a) == ["a", "b"]  # output in key order


def test_assignment_with_nothing_available() -> None:
    empty: dict[int, list[int]] = {}
    assert assign_partitions(range(3), empty) == ({}, [0, 1, 2])
    assert assign_partitions([], {0: [1]}) == ({}, [])


# --- bad arguments ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda: partitions_for(0, 8.0, 3),  # type: ignore[arg-type]
        lambda: partitions_for("0", 8, 3),  # type: ignore[arg-type]
        lambda: partitions_for(True, 8, 3),
        lambda: assignment(0, 3),
        lambda: assignment(64, 0),
        lambda: assignment(64, 3, 0),
        lambda: partitions_for(3, 64, 3),
        lambda: partitions_for(-1, 64, 3),
        lambda: partitions_for(0, 0, 3),
        lambda: partitions_for(0, 64, 0),
        lambda: partitions_for(0, 64, 3, -2),
    ],
)
def test_bad_arguments_are_refused(call: object) -> None:
    with pytest.raises(InvalidParameter) as info:
        call()  # type: ignore[operator]
    assert status_for(info.value) == 400
    assert "must be" in info.value.reason
