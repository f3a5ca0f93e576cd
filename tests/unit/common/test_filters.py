"""Filters: the JSON shape, the checks, and column-wise evaluation = the reference.

`filter_mask` (pyarrow, what the shard runs) must agree with `matches` (row by row, the
definition) on every row of every filter: a seeded generator draws random tables and
random filters over them, missing values and `not` included.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pydantic
import pytest

from simsearch.common.errors import FilterTooLarge, InvalidFilter
from simsearch.common.filters import (
    MAX_DEPTH,
    MAX_IN_VALUES,
    MAX_NODES,
    MAX_STRING,
    And,
    Eq,
    Filter,
    In,
    Not,
    Prefix,
    Range,
    check_filter,
    matches,
)
from simsearch.common.metadata import Schema
from simsearch.common.metatable import build_table, filter_mask

FILTER: pydantic.TypeAdapter[Filter] = pydantic.TypeAdapter(Filter)
SCHEMA: Schema = {
    "key": "string",
    "size": "int",
    "mtime": "time",
    "content_type": "string",
    "label": "string",
    "score": "float",
    "ok": "bool",
}


def parse(value: Any) -> Filter:
    return FILTER.validate_python(value)


# ---- shape


def test_every_operator_parses_to_its_node() -> None:
    assert isinstance(parse({"field": "label", "eq": "x"}), Eq)
    node = parse({"field": "label", "in": ["x", "y"]})
    assert isinstance(node, In) and node.values == ["x", "y"]
    assert isinstance(parse({"field": "size", "range": {"gte": 1}}), Range)
    assert isinstance(parse({"field": "key", "prefix": "a/"}), Prefix)
    both = parse({"and": [{"field": "ok", "eq": True}, {"not": {"field": "size", "eq": 1}}]})
    assert isinstance(both, And) and isinstance(both.all_of[1], Not)
    assert parse({"field": "ok", "eq": True}).eq is True  # type: ignore[union-attr]


def test_a_filter_serialises_back_to_its_json() -> None:
    raw = {"or": [{"field": "label", "in": ["x"]}, {"not": {"field": "key", "prefix": "a"}}]}
    assert FILTER.dump_python(parse(raw), exclude_none=True) == raw


@pytest.mark.parametrize(
    "raw",
    [
        {"field": "label"},
        {"field": "label", "eq": "x", "prefix": "y"},
        {"field": "label", "eq": "x", "extra": 1},
        {"field": "size", "range": {}},
        {"field": "label", "in": []},
        {"and": []},
        "label = x",
    ],
)
def test_malformed_filters_are_validation_errors(raw: Any) -> None:
    with pytest.raises(pydantic.ValidationError):
        parse(raw)


# ---- checks


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ({"field": "colour", "eq": "red"}, "unknown filter field 'colour'"),
        ({"field": "size", "eq": "big"}, "'size' is of type int"),
        ({"field": "size", "eq": 1.5}, "of type int"),
        ({"field": "ok", "eq": 1}, "of type bool"),
        ({"field": "label", "eq": 3}, "of type string"),
        ({"field": "score", "eq": True}, "of type float"),
        ({"field": "mtime", "eq": "soon"}, "ISO-8601"),
        ({"field": "label", "range": {"gt": 1}}, "numeric or time field"),
        ({"field": "size", "range": {"gt": "x"}}, "of type int"),
        ({"field": "size", "prefix": "1"}, "'prefix' needs a string field"),
        ({"field": "label", "in": ["a", 1]}, "of type string"),
    ],
)
def test_check_refuses_what_does_not_fit_the_schema(raw: Any, words: str) -> None:
    with pytest.raises(InvalidFilter) as err:
        check_filter(parse(raw), SCHEMA)
    assert words in err.value.reason and err.value.code == "invalid_filter"


def test_a_version_without_metadata_refuses_every_filter() -> None:
    with pytest.raises(InvalidFilter, match="no metadata"):
        check_filter(parse({"field": "key", "eq": "a"}), None)


def test_the_limits() -> None:
    leaf = {"field": "label", "eq": "x"}
    check_filter(parse({"or": [leaf] * (MAX_NODES - 1)}), SCHEMA)
    with pytest.raises(FilterTooLarge, match="nodes") as err:
        check_filter(parse({"or": [leaf] * MAX_NODES}), SCHEMA)
    assert err.value.code == "filter_too_large"
    deep: Any = leaf
    for _ in range(MAX_DEPTH - 1):
        deep = {"not": deep}
    check_filter(parse(deep), SCHEMA)
    with pytest.raises(FilterTooLarge, match="deeper"):
        check_filter(parse({"not": deep}), SCHEMA)
    check_filter(parse({"field": "size", "in": list(range(MAX_IN_VALUES))}), SCHEMA)
    with pytest.raises(FilterTooLarge, match="values"):
        check_filter(parse({"field": "size", "in": list(range(MAX_IN_VALUES + 1))}), SCHEMA)
    check_filter(parse({"field": "key", "prefix": "a" * MAX_STRING}), SCHEMA)
    with pytest.raises(FilterTooLarge, match="characters"):
        check_filter(parse({"field": "key", "prefix": "a" * (MAX_STRING + 1)}), SCHEMA)
    with pytest.raises(FilterTooLarge, match="characters"):
        check_filter(parse({"field": "label", "eq": "a" * (MAX_STRING + 1)}), SCHEMA)


# ---- semantics, by example


ROWS: list[dict[str, Any]] = [
    {"key": "a/1.jpg", "size": 5, "label": "x", "mtime": datetime(2024, 1, 1, tzinfo=UTC)},
    {"key": "a/2.jpg", "size": 50, "label": "y"},
    {"key": "b/3.jpg", "size": 500},
]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"field": "label", "eq": "x"}, [True, False, False]),
        ({"not": {"field": "label", "eq": "x"}}, [False, True, True]),  # missing: not matches
        ({"field": "label", "in": ["x", "y"]}, [True, True, False]),
        ({"field": "size", "range": {"gt": 5, "lte": 500}}, [False, True, True]),
        ({"field": "size", "range": {"gte": 5.5}}, [False, True, True]),
        ({"field": "key", "prefix": "a/"}, [True, True, False]),
        ({"field": "mtime", "range": {"lt": "2024-06-01"}}, [True, False, False]),
        ({"field": "mtime", "range": {"gte": 1704067200}}, [True, False, False]),
        ({"field": "mtime", "eq": "2024-01-01T01:00:00+01:00"}, [True, False, False]),
        (
            {"or": [{"field": "size", "eq": 500}, {"and": [{"field": "label", "eq": "y"}]}]},
            [False, True, True],
        ),
    ],
)
def test_examples_agree_row_and_column_wise(raw: Any, expected: list[bool]) -> None:
    node = parse(raw)
    check_filter(node, SCHEMA)
    table = build_table(np.arange(len(ROWS)), ROWS, SCHEMA)
    assert [matches(node, row, SCHEMA) for row in ROWS] == expected
    assert filter_mask(node, table).tolist() == expected


# ---- semantics, at random


_LABELS = ["tulips", "roses", "daisy", "Roses", "", "ros"]
_KEYS = ["a/1.jpg", "a/2.png", "b/1.jpg", "b/c/9.gif", "ab.jpg", "x.webp"]
_TIMES = [datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=d, microseconds=7) for d in range(5)]


def _value(rng: random.Random, kind: str) -> Any:
    if kind == "string":
        return rng.choice(_LABELS + _KEYS)
    if kind == "int":
        return rng.choice([0, 1, 2, 3, 10, -5, 2**40])
    if kind == "float":
        return rng.choice([0.0, 0.5, 1, 2.25, -3.5, 1e9])  # ints in a float field too
    if kind == "bool":
        return rng.choice([True, False])
    return rng.choice(_TIMES)


def _row(rng: random.Random, i: int) -> dict[str, Any]:
    row: dict[str, Any] = {"key": rng.choice(_KEYS) + str(i)}
    for name, kind in SCHEMA.items():
        if name != "key" and rng.random() < 0.75:  # a quarter of the values are missing
            row[name] = _value(rng, kind)
    return row


def _filter_value(rng: random.Random, kind: str) -> Any:
    """A value for a condition on a field of `kind` (times as ISO or epoch, like clients)."""
    value = _value(rng, kind)
    if kind == "time":
        return value.isoformat() if rng.random() < 0.5 else value.timestamp()
    if kind == "float" and rng.random() < 0.3:
        return rng.choice([1, 3])
    return value


def _leaf(rng: random.Random) -> dict[str, Any]:
    name = rng.choice(list(SCHEMA))
    kind = SCHEMA[name]
    ops = ["eq", "in"]
    if kind in ("int", "float", "time"):
        ops.append("range")
    if kind == "string":
        ops.append("prefix")
    op = rng.choice(ops)
    if op == "eq":
        return {"field": name, "eq": _filter_value(rng, kind)}
    if op == "in":
        return {"field": name, "in": [_filter_value(rng, kind) for _ in range(rng.randint(1, 4))]}
    if op == "prefix":
        return {"field": name, "prefix": rng.choice(["a", "a/", "b/c", "ros", "", "zz"])}
    bounds = rng.sample(["gt", "gte", "lt", "lte"], rng.randint(1, 2))
    if kind == "int":
        return {"field": name, "range": {b: rng.choice([0, 1.5, 3, 2**40, -5]) for b in bounds}}
    return {"field": name, "range": {b: _filter_value(rng, kind) for b in bounds}}


def _random_filter(rng: random.Random, depth: int = 1) -> dict[str, Any]:
    roll = rng.random()
    if depth >= 4 or roll < 0.45:
        return _leaf(rng)
    if roll < 0.65:
        return {"not": _random_filter(rng, depth + 1)}
    op = "and" if roll < 0.83 else "or"
    return {op: [_random_filter(rng, depth + 1) for _ in range(rng.randint(1, 3))]}


@pytest.mark.parametrize("seed", range(8))
def test_filter_mask_equals_matches_on_random_rows_and_filters(seed: int) -> None:
    rng = random.Random(seed)
    rows = [_row(rng, i) for i in range(60)]
    table = build_table(np.arange(len(rows)), rows, SCHEMA)
    seen_true = seen_false = 0
    for _ in range(150):
        node = parse(_random_filter(rng))
        check_filter(node, SCHEMA)
        expected = [matches(node, row, SCHEMA) for row in rows]
        got = filter_mask(node, table)
        assert got.dtype == bool and got.shape == (len(rows),)
        assert got.tolist() == expected, FILTER.dump_json(node, exclude_none=True)
        seen_true += sum(expected)
        seen_false += len(expected) - sum(expected)
    assert seen_true > 500 and seen_false > 500  # the filters select something, not all
