"""The router's routing: which version a query runs on, and who searches which partition."""

from __future__ import annotations

from simsearch.common.metadata import FieldType
from simsearch.common.wire import ShardVersionInfo
from simsearch.router.routing import ShardView, assign, choose_version, collections, versions

OLD = "v20250101T000000Z-aaaaaa"
NEW = "v20250102T000000Z-bbbbbb"
NEWER = "v20250103T000000Z-cccccc"


def held(
    version: str,
    ready: list[int],
    p: int = 8,
    vectors: int | None = None,
    live: bool = False,
    collection: str = "default",
    metadata: dict[str, FieldType] | None = None,
) -> ShardVersionInfo:
    return ShardVersionInfo(
        version=version,
        collection=collection,
        metadata=metadata,
        partitions=p,
        ready=ready,
        dim=32,
        nprobe=1,
        refine=1,
        vectors=len(ready) * 10 if vectors is None else vectors,
        model="test",
        live=live,
    )


def shard(url: str, *infos: ShardVersionInfo, polled: tuple[str, ...] = ()) -> ShardView:
    return ShardView.of(url, infos, polled)


def test_newest_fully_covered_version_wins() -> None:
    shards = [
        shard("a", held(OLD, [0, 1, 2, 3]), held(NEW, [0, 1, 2, 3])),
        shard("b", held(OLD, [4, 5, 6, 7]), held(NEW, [4, 5, 6, 7])),
    ]
    choice = choose_version(shards)
    assert choice is not None
    assert choice.version == NEW and choice.complete and choice.coverage == 1.0
    assert choice.vectors == 80


def test_a_newer_version_still_loading_does_not_take_over() -> None:
    """While NEWER loads (half its partitions ready), the complete NEW keeps answering."""
    shards = [
        shard("a", held(NEW, [0, 1, 2, 3]), held(NEWER, [0, 1, 2, 3])),
        shard("b", held(NEW, [4, 5, 6, 7])),
    ]
    choice = choose_version(shards)
    assert choice is not None and choice.version == NEW and choice.complete


def test_after_a_rollback_the_live_older_version_wins_over_a_newer_complete_one() -> None:
    """CURRENT was rolled back to OLD: shards still hold NEW complete, but follow CURRENT."""
    shards = [
        shard("a", held(OLD, [0, 1, 2, 3], live=True), held(NEW, [0, 1, 2, 3])),
        shard("b", held(OLD, [4, 5, 6, 7], live=True), held(NEW, [4, 5, 6, 7])),
    ]
    choice = choose_version(shards)
    assert choice is not None and choice.version == OLD and choice.complete and choice.live


def test_a_rollback_target_still_loading_leaves_the_newer_complete_version_answering() -> None:
    """The rolled-back-to OLD must be loaded again first: NEW answers in full meanwhile."""
    shards = [
        shard("a", held(OLD, [0, 1], live=True), held(NEW, [0, 1, 2, 3])),
        shard("b", held(OLD, [], live=True), held(NEW, [4, 5, 6, 7])),
    ]
    choice = choose_version(shards)
    assert choice is not None and choice.version == NEW and choice.complete and not choice.live


def test_a_forward_update_switches_only_once_the_live_version_is_complete() -> None:
    """NEWER is live but half loaded: complete NEW answers; once NEWER is complete, it does."""
    loading = [
        shard("a", held(NEW, [0, 1, 2, 3]), held(NEWER, [0, 1, 2, 3], live=True)),
        shard("b", held(NEW, [4, 5, 6, 7]), held(NEWER, [4], live=True)),
    ]
    choice = choose_version(loading)
    assert choice is not None and choice.version == NEW and choice.complete
    done = [
        shard("a", held(NEW, [0, 1, 2, 3]), held(NEWER, [0, 1, 2, 3], live=True)),
        shard("b", held(NEW, [4, 5, 6, 7]), held(NEWER, [4, 5, 6, 7], live=True)),
    ]
    choice = choose_version(done)
    assert choice is not None and choice.version == NEWER and choice.complete


def test_shards_disagreeing_on_live_take_the_newest_live_complete_version() -> None:
    """Mid-rollback, shard b has not polled yet: both versions are live somewhere."""
    shards = [
        shard("a", held(OLD, [0, 1, 2, 3], live=True), held(NEW, [0, 1, 2, 3])),
        shard("b", held(OLD, [4, 5, 6, 7]), held(NEW, [4, 5, 6, 7], live=True)),
    ]
    choice = choose_version(shards)
    assert choice is not None and choice.version == NEW and choice.live


def test_without_live_information_the_newest_complete_version_wins() -> None:
    """Shards that predate the `live` field: the choice is what it always was."""
    shards = [
        shard("a", held(OLD, [0, 1, 2, 3]), held(NEW, [0, 1, 2, 3]), held(NEWER, [0])),
        shard("b", held(OLD, [4, 5, 6, 7]), held(NEW, [4, 5, 6, 7])),
    ]
    choice = choose_version(shards)
    assert choice is not None and choice.version == NEW and not choice.live
    old_wire = held(OLD, [0]).model_dump(exclude={"live"})  # a report without the field
    assert ShardVersionInfo.model_validate(old_wire).live is False


def test_a_live_but_partial_version_does_not_beat_better_coverage() -> None:
    """With nothing complete, coverage decides as before; `live` does not pull it down."""
    shards = [shard("a", held(OLD, [0, 1, 2, 3, 4, 5]), held(NEW, [0, 1], live=True))]
    choice = choose_version(shards)
    assert choice is not None and choice.version == OLD and not choice.complete


def test_no_complete_version_takes_the_best_coverage_and_is_partial() -> None:
    shards = [
        shard("a", held(OLD, [0, 1, 2, 3, 4, 5]), held(NEW, [0, 1, 2, 3])),
        shard("b", held(NEWER, [0])),
    ]
    choice = choose_version(shards)
    assert choice is not None
    assert choice.version == OLD and not choice.complete
    assert choice.coverage == 6 / 8


def test_equal_coverage_prefers_the_newer_version() -> None:
    shards = [shard("a", held(OLD, [0, 1]), held(NEW, [2, 3]))]
    choice = choose_version(shards)
    assert choice is not None and choice.version == NEW and choice.coverage == 0.25


def test_nothing_ready_anywhere_is_none() -> None:
    assert choose_version([]) is None
    assert choose_version([shard("a", held(NEW, []))]) is None


def test_partitions_outside_range_and_odd_shapes_are_ignored() -> None:
    odd = ShardVersionInfo(
        version=NEW, partitions=4, ready=[0, 1], dim=32, nprobe=1, refine=1, vectors=5, model="x"
    )
    shards = [
        shard("a", held(NEW, [0, 1, 2, 3, 99])),
        shard("b", held(NEW, [4, 5, 6, 7])),
        shard("c", odd),  # disagrees with the others on P: not trusted
    ]
    (choice,) = versions(shards)
    assert choice.partitions == 8 and choice.complete
    assert set(choice.holders) == {"a", "b"}


def test_assign_gives_each_partition_to_exactly_one_shard() -> None:
    """During a rebalance partitions 2 and 3 are ready on both shards: asked once each."""
    shards = [
        shard("a", held(NEW, [0, 1, 2, 3])),
        shard("b", held(NEW, [2, 3, 4, 5, 6, 7])),
    ]
    choice = choose_version(shards)
    assert choice is not None
    result = assign(choice)
    asked = sorted(p for parts in result.by_shard.values() for p in parts)
    assert asked == list(range(8)) and result.uncovered == []
    assert {len(parts) for parts in result.by_shard.values()} == {4}  # balanced
    assert set(result.by_shard["a"]) >= {0, 1}


def test_coverage_counts_overlapping_vectors_once() -> None:
    shards = [
        shard("a", held(NEW, [0, 1, 2, 3], vectors=40)),
        shard("b", held(NEW, [2, 3, 4, 5, 6, 7], vectors=60)),
    ]
    choice = choose_version(shards)
    assert choice is not None and choice.vectors == 80


def test_reassignment_excludes_failed_shards_and_reports_the_uncovered() -> None:
    shards = [
        shard("a", held(NEW, [0, 1, 2, 3])),
        shard("b", held(NEW, [2, 3, 4, 5, 6, 7])),
    ]
    choice = choose_version(shards)
    assert choice is not None
    retry = assign(choice, [0, 1, 2, 3], exclude={"a"})
    assert retry.by_shard == {"b": [2, 3]}
    assert retry.uncovered == [0, 1]


def test_holders_of_an_item_partition() -> None:
    choice = choose_version([shard("b", held(NEW, [1, 2])), shard("a", held(NEW, [2, 3]))])
    assert choice is not None
    assert choice.holders_of(2) == ["a", "b"]
    assert choice.holders_of(0) == []


def test_prefer_breaks_ties_between_equally_loaded_shards() -> None:
    shards = [shard("a", held(NEW, list(range(8)))), shard("b", held(NEW, list(range(8))))]
    choice = choose_version(shards)
    assert choice is not None
    result = assign(choice, [5], prefer={"a": 9.0, "b": 1.0}.__getitem__)
    assert result.by_shard == {"b": [5]}


# ------------------------------------------------------------------ per collection


def test_each_collection_gets_its_own_choice_from_its_own_versions() -> None:
    """`cats` is complete on its OLD version while its NEW one loads; `dogs` has only NEW,
    on one shard: neither's versions count for the other, nor for the default."""
    shards = [
        shard(
            "a",
            held(OLD, [0, 1, 2, 3], collection="cats"),
            held(NEW, [0, 1], collection="cats"),
            held(NEW, list(range(8)), collection="dogs", p=8),
        ),
        shard("b", held(OLD, [4, 5, 6, 7], collection="cats")),
    ]
    cats = choose_version(shards, "cats")
    dogs = choose_version(shards, "dogs")
    assert cats is not None and dogs is not None
    assert (cats.collection, cats.version, cats.complete) == ("cats", OLD, True)
    assert (dogs.collection, dogs.version, set(dogs.holders)) == ("dogs", NEW, {"a"})
    assert [v.version for v in versions(shards, "cats")] == [NEW, OLD]
    assert choose_version(shards) is None  # no shard holds the default collection
    assert choose_version(shards, "birds") is None
    assert collections(shards) == ["cats", "dogs"]


def test_equal_version_ids_of_two_collections_never_mix() -> None:
    """Version ids are unique per index only: the view is keyed by (collection, version)."""
    view = shard(
        "a",
        held(NEW, [0, 1, 2, 3], p=4, collection="cats", vectors=4),
        held(NEW, [0, 1], p=2, collection="dogs", vectors=2),
    )
    cats, dogs = choose_version([view], "cats"), choose_version([view], "dogs")
    assert cats is not None and dogs is not None
    assert (cats.partitions, cats.vectors) == (4, 4) and (dogs.partitions, dogs.vectors) == (2, 2)


def test_a_polled_collection_without_versions_is_listed_but_not_chosen() -> None:
    shards = [shard("a", held(NEW, [0, 1], p=2), polled=("default", "fresh"))]
    assert collections(shards) == ["default", "fresh"]
    assert choose_version(shards, "fresh") is None


def test_the_metadata_schema_is_the_most_common_report() -> None:
    schema: dict[str, FieldType] = {"key": "string", "size": "int"}
    odd: dict[str, FieldType] = {"key": "int"}
    shards = [
        shard("a", held(NEW, [0, 1, 2, 3], metadata=schema)),
        shard("b", held(NEW, [4, 5, 6, 7], metadata=schema)),
        shard("c", held(NEW, [0], metadata=odd)),
    ]
    choice = choose_version(shards)
    assert choice is not None and choice.metadata == schema
    legacy = choose_version([shard("a", held(NEW, list(range(8))))])
    assert legacy is not None and legacy.metadata is None  # built before filters
