"""Which collections exist for the router, and how `GET /collections[/{name}]` shows them."""

from __future__ import annotations

import pytest

from simsearch.common.errors import CollectionNotFound, Unavailable
from simsearch.common.metadata import FieldType
from simsearch.common.wire import ShardInfo, ShardVersionInfo
from simsearch.router import catalog
from simsearch.router.registry import ShardState

OLD = "v20250101T000000Z-aaaaaa"
NEW = "v20250102T000000Z-bbbbbb"
SCHEMA: dict[str, FieldType] = {"key": "string", "size": "int"}


def held(
    collection: str, version: str, ready: list[int], p: int = 2, live: bool = False
) -> ShardVersionInfo:
    return ShardVersionInfo(
        version=version, collection=collection, partitions=p, ready=ready, dim=8, nprobe=1,
        refine=1, vectors=10 * len(ready), model="test", live=live,
        metadata=SCHEMA if collection == "cats" else None,
    )  # fmt: skip


def state(url: str, *versions: ShardVersionInfo, polled: tuple[str, ...] = (), up: bool = True):
    info = ShardInfo(
        ordinal=0, replicas=1, index="default", ready=True, versions=list(versions),
        collections=list(polled), rss_bytes=0, version="test",
    )  # fmt: skip
    return ShardState(url, up=up, info=info, seen_at=0.0, error=None if up else "refused")


def cluster() -> list[ShardState]:
    return [
        state(
            "a",
            held("cats", OLD, [0, 1], live=True),
            held("cats", NEW, [0]),
            held("default", NEW, [0]),
            polled=("cats", "default", "fresh"),
        ),
        state("b", held("default", NEW, [1])),
        state("c", held("birds", OLD, [0, 1]), up=False),  # down: known, not listed
    ]


def test_the_list_has_every_collection_a_shard_that_is_up_reports() -> None:
    listing = catalog.listing(cluster(), "default")
    assert listing.default == "default"
    by_name = {c.name: c for c in listing.collections}
    assert list(by_name) == ["cats", "default", "fresh"]
    cats = by_name["cats"]
    assert (cats.version, cats.partitions, cats.coverage, cats.partial) == (OLD, 2, 1.0, False)
    assert cats.metadata == SCHEMA and cats.vectors == 20 and cats.model == "test"
    assert by_name["default"].metadata is None and not by_name["default"].partial
    fresh = by_name["fresh"]  # polled, nothing loaded yet
    assert fresh.version is None and fresh.partial and fresh.coverage == 0.0


def test_the_detail_lists_every_version_of_the_collection() -> None:
    detail = catalog.detail(cluster(), "cats", "default")
    assert detail.name == "cats" and detail.version == OLD
    assert [(v.version, v.live, v.coverage) for v in detail.versions] == [
        (NEW, False, 0.5),
        (OLD, True, 1.0),
    ]


def test_an_unknown_collection_is_a_404_naming_the_known_ones() -> None:
    with pytest.raises(CollectionNotFound) as err:
        catalog.detail(cluster(), "dogs", "default")
    assert err.value.reason == (
        "no shard serves a collection 'dogs'; known: birds, cats, default, fresh"
    )
    catalog.check_known(cluster(), "birds", "default")  # its shard is down: known, not 404


def test_with_every_shard_down_nothing_is_called_unknown() -> None:
    down = [state("a", held("cats", OLD, [0, 1]), up=False)]
    catalog.check_known(down, "dogs", "default")  # the caller answers 503, not 404
    with pytest.raises(Unavailable, match="no shard is up to say whether collection 'dogs'"):
        catalog.detail(down, "dogs", "default")
    assert catalog.detail(down, "cats", "default").version is None  # known, nothing served
    assert catalog.known(down, "main") == ["cats", "main"]  # the default is always known
