"""API keys: scopes, the key file's format, its re-reading on change, the settings' checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from simsearch.common.apikeys import (
    KeyRing,
    KeySource,
    authorize,
    parse_key_file,
    presented_key,
)
from simsearch.common.errors import ConfigError, Forbidden, Unauthorized
from simsearch.common.settings import load_settings
from simsearch.router.settings import RouterSettings
from simsearch.shard.settings import ShardSettings
from tests.support.keyfiles import swap_secret_volume


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_key_listed_as_search_and_admin_is_admin() -> None:
    ring = KeyRing.of([("k", "search"), ("k", "admin"), ("s", "search")])
    assert len(ring) == 2
    assert ring.scope_of("k") == "admin" and ring.scope_of("s") == "search"
    assert ring.scope_of("x") is None and ring.scope_of("") is None
    assert ring.scope_of("kk") is None and ring.scope_of("k ") is None


def test_the_key_file_has_scope_lines_comments_and_blank_lines() -> None:
    ring = parse_key_file("# rotated 2025-01-01\n\nadmin:a-1\nsearch: s:1 \nSEARCH:s2\n", "f")
    assert {ring.scope_of(k) for k in ("a-1", "s:1", "s2")} == {"admin", "search"}
    assert ring.scope_of("s:1") == "search"  # only the first colon separates the scope


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("just-a-key\n", "f:1: expected 'search:<key>' or 'admin:<key>'"),
        ("admin:ok\nroot:secret\n", "f:2: expected"),
        ("search:\n", "f:1: API keys must be printable ASCII"),
        ("search:has space\n", "f:1: API keys must be"),
    ],
)
def test_a_bad_key_file_line_is_named_without_the_key(text: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_key_file(text, "f")
    assert words in err.value.reason
    assert "secret" not in err.value.reason and "has space" not in err.value.reason


def test_presented_key_from_the_header_or_bearer_never_anything_else() -> None:
    assert presented_key({"x-api-key": " k "}) == "k"
    assert presented_key({"authorization": "Bearer k2"}) == "k2"
    assert presented_key({"authorization": "Basic azI="}) == ""
    assert presented_key({}) == ""


def test_authorize_401_for_missing_or_unknown_403_for_a_search_key_on_admin() -> None:
    source = KeySource(KeyRing.of([("s", "search"), ("a", "admin")]))
    assert authorize(source, {"x-api-key": "s"}, "search") == "s"
    assert authorize(source, {"x-api-key": "a"}, "search") == "a"  # admin may search
    assert authorize(source, {"x-api-key": "a"}, "admin") == "a"
    with pytest.raises(Unauthorized):
        authorize(source, {}, "search")
    with pytest.raises(Unauthorized):
        authorize(source, {"x-api-key": "nope"}, "admin")
    with pytest.raises(Forbidden):
        authorize(source, {"x-api-key": "s"}, "admin")
    assert authorize(KeySource(KeyRing()), {}, "admin") is None  # keys off


def test_a_rotated_secret_volume_is_read_within_the_check_interval(tmp_path: Path) -> None:
    swap_secret_volume(tmp_path, "search:old\n", 1)
    clock = Clock()
    source = KeySource(KeyRing.of([("fixed", "search")]), tmp_path / "keys", 1.0, clock)
    assert source.ring().scope_of("old") == "search"
    swap_secret_volume(tmp_path, "search:new\nadmin:boss\n", 2)
    assert source.ring().scope_of("old") == "search"  # not looked at again yet
    clock.now += 1.0
    ring = source.ring()
    assert ring.scope_of("old") is None and ring.scope_of("new") == "search"
    assert ring.scope_of("boss") == "admin" and ring.scope_of("fixed") == "search"
    assert source.reloads == 1
    clock.now += 1.0
    source.ring()
    assert source.reloads == 1  # same file: not read again


def test_a_broken_or_missing_file_keeps_the_last_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("admin:a\n")
    clock = Clock()
    source = KeySource(KeyRing(), path, 1.0, clock)
    path.write_text("garbage line\n")
    clock.now += 2
    assert source.ring().scope_of("a") == "admin"
    path.unlink()
    clock.now += 2
    assert source.ring().scope_of("a") == "admin"
    path.write_text("admin:b\n")
    clock.now += 2
    assert source.ring().scope_of("b") == "admin" and source.ring().scope_of("a") is None


def test_an_empty_key_file_lets_nobody_in(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("# nothing yet\n")
    source = KeySource(KeyRing(), path)
    assert source.enabled
    with pytest.raises(Unauthorized):
        authorize(source, {"x-api-key": "anything"}, "search")


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"api_keys": "good,has space"}, "SIMSEARCH_API_KEYS"),
        ({"admin_keys": "é"}, "SIMSEARCH_ADMIN_KEYS"),
        ({"api_keys_file": "/nonexistent/keys"}, "SIMSEARCH_API_KEYS_FILE"),
    ],
)
def test_bad_key_settings_fail_at_start_naming_the_variable(
    settings: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(RouterSettings, shards="http://s:1", **settings)
    assert named in err.value.reason


def test_router_and_shard_settings_build_the_same_admin_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("admin:from-file\nsearch:reader\n")
    router = load_settings(
        RouterSettings, shards="http://s:1", api_keys="s1", admin_keys="a1", api_keys_file=path
    ).key_source()
    shard = load_settings(
        ShardSettings, store="file:///x", shard_ordinal=0, admin_keys="a1", api_keys_file=path
    ).key_source()
    for source in (router, shard):
        ring = source.ring()
        assert ring.scope_of("a1") == ring.scope_of("from-file") == "admin"
        assert ring.scope_of("reader") == "search"
    assert router.ring().scope_of("s1") == "search" and shard.ring().scope_of("s1") is None


# ------------------------------------------------------------------ collections


def test_a_key_file_line_may_restrict_its_key_to_collections() -> None:
    ring = parse_key_file(
        "search:a collections=cats,dogs\nadmin:b   collections=cats\nsearch:c\n"
        "search:d collections=x collections=y\n",
        "f",
    )
    assert ring.grant_of("a") == ("search", frozenset({"cats", "dogs"}))
    assert ring.grant_of("b") == ("admin", frozenset({"cats"}))
    assert ring.grant_of("c") == ("search", None)  # no option: every collection
    assert ring.grant_of("d") == ("search", frozenset({"x", "y"}))
    assert ring.grant_of("zz") is None and ring.scope_of("a") == "search"


def test_a_key_listed_twice_gets_the_widest_grant() -> None:
    ring = KeyRing.of(
        [
            ("k", "search", frozenset({"a"})),
            ("k", "admin", frozenset({"b"})),
            ("open", "search", frozenset({"a"})),
            ("open", "search", None),
        ]
    )
    assert ring.grant_of("k") == ("admin", frozenset({"a", "b"}))
    assert ring.grant_of("open") == ("search", None)
    fixed = KeyRing.of([("k", "search")])  # from a variable: unrestricted
    assert fixed.merged(ring).grant_of("k") == ("admin", None)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("search:k collections=\n", "f:1: 'collections=' needs comma-separated"),
        ("search:k collections=Bad/Name\n", "f:1: 'collections=' needs"),
        ("search:k colections=a\n", "f:1: API keys must be printable ASCII"),
    ],
)
def test_a_bad_collections_option_is_named_with_its_line(text: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_key_file(text, "f")
    assert words in err.value.reason


def test_authorize_refuses_a_collection_the_key_may_not_use() -> None:
    source = KeySource(KeyRing.of([("s", "search", frozenset({"cats"}))]))
    assert authorize(source, {"x-api-key": "s"}, "search", "cats") == "s"
    assert authorize(source, {"x-api-key": "s"}, "search") == "s"  # not about a collection
    with pytest.raises(Forbidden, match="may not use collection 'dogs'; it may use: cats"):
        authorize(source, {"x-api-key": "s"}, "search", "dogs")
