"""Metadata types, built-in rows, sidecar parsing and schema inference (common/metadata.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from simsearch.common.errors import InvalidParameter
from simsearch.common.metadata import (
    BUILTIN_FIELDS,
    builtin_row,
    content_type_of,
    infer_schema,
    is_field_name,
    parse_sidecar,
    parse_time,
)


def test_builtin_row_has_every_builtin_field() -> None:
    when = datetime(2024, 5, 1, tzinfo=UTC)
    row = builtin_row("photos/a.JPG", 123, when)
    assert set(row) == set(BUILTIN_FIELDS)
    assert row == {"key": "photos/a.JPG", "size": 123, "mtime": when, "content_type": "image/jpeg"}
    assert content_type_of("x.png") == "image/png"
    assert content_type_of("x.unknownsuffix") == "application/octet-stream"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-05-01T12:00:00Z", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01", datetime(2024, 5, 1, tzinfo=UTC)),
        ("2024-05-01T14:00:00+02:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        (0, datetime(1970, 1, 1, tzinfo=UTC)),
        (1.5, datetime(1970, 1, 1, 0, 0, 1, 500000, tzinfo=UTC)),
        (
            datetime(2024, 1, 1, 1, tzinfo=timezone(timedelta(hours=1))),
            datetime(2024, 1, 1, tzinfo=UTC),
        ),
    ],
)
def test_parse_time_gives_utc(value: object, expected: datetime) -> None:
    parsed = parse_time(value)
    assert parsed == expected and parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize("value", [True, "yesterday", [2024], None])
def test_parse_time_refuses_what_is_not_a_time(value: object) -> None:
    with pytest.raises(ValueError):
        parse_time(value)


def test_infer_schema_types_and_the_int_float_mix() -> None:
    rows: list[dict[str, object]] = [
        {"key": "a", "label": "tulips", "n": 1, "score": 1, "ok": True, "day": "2024-05-01"},
        {
            "key": "b",
            "label": "roses",
            "n": 2,
            "score": 0.5,
            "ok": False,
            "day": "2024-06-01T10:00:00Z",
        },
        {"key": "c"},
    ]
    assert infer_schema(rows) == {
        "day": "time",
        "label": "string",
        "n": "int",
        "ok": "bool",
        "score": "float",
    }


def test_a_string_field_with_one_non_date_value_stays_a_string() -> None:
    assert infer_schema([{"d": "2024-05-01"}, {"d": "later"}]) == {"d": "string"}


@pytest.mark.parametrize(
    ("rows", "words"),
    [
        ([{"x": 1}, {"x": "one"}], "'x' has both int and string"),
        ([{"x": True}, {"x": 1}], "'x' has both bool and int"),
        ([{"x": [1, 2]}], "'x'"),
        ([{"x": {"a": 1}}], "'x'"),
        ([{"x": 2**64}], "64-bit"),
        ([{"size": 3}], "built-in"),
        ([{"mtime": "2024-01-01"}], "built-in"),
        ([{"has space": 1}], "not allowed"),
        ([{"_private": 1}], "not allowed"),
    ],
)
def test_infer_schema_refuses_with_the_field_named(
    rows: list[dict[str, object]], words: str
) -> None:
    with pytest.raises(InvalidParameter) as err:
        infer_schema(rows)
    assert words in err.value.reason


def test_field_names() -> None:
    assert is_field_name("label") and is_field_name("exif.camera:model-2")
    assert not is_field_name("") and not is_field_name("_id") and not is_field_name("1a")
    assert not is_field_name("a" * 65)


def test_parse_jsonl_sidecar() -> None:
    data = b'{"key": "a.jpg", "label": "x", "n": 1}\n\n{"key": "b.jpg", "ok": true}\n'
    assert parse_sidecar(data, "metadata.jsonl") == {
        "a.jpg": {"label": "x", "n": 1},
        "b.jpg": {"ok": True},
    }


def test_parse_csv_sidecar_reads_cells_as_scalars_and_keeps_keys_strings() -> None:
    data = b"key,label,n,score,ok\n0001,tulips,3,0.5,TRUE\nb.jpg,,,, false\nc.jpg,x,,,\n"
    rows = parse_sidecar(data, "metadata.csv")
    assert rows["0001"] == {"label": "tulips", "n": 3, "score": 0.5, "ok": True}
    assert rows["b.jpg"] == {"ok": " false"}  # cells are not trimmed: " false" is a string
    assert rows["c.jpg"] == {"label": "x"}


def test_a_utf8_bom_is_accepted() -> None:
    assert parse_sidecar(b'\xef\xbb\xbf{"key": "a"}\n', "m.jsonl") == {"a": {}}


@pytest.mark.parametrize(
    ("data", "name", "words"),
    [
        (b"\xff\xfe{", "metadata.jsonl", "not UTF-8"),
        (b'{"key": "a"}\n{"key": \n', "metadata.jsonl", "line 2: not JSON"),
        (b"[1, 2]\n", "metadata.jsonl", "line 1: each line must be a JSON object"),
        (b'{"key": "a"}\n{"key": "a"}\n', "metadata.jsonl", "line 2: key 'a' is given twice"),
        (b'{"label": "x"}\n', "metadata.jsonl", "line 1: every row needs a string 'key'"),
        (b'{"key": 7}\n', "metadata.jsonl", "string 'key'"),
        (b"name,label\na,b\n", "metadata.csv", "'key' column"),
        (b"key,label\na,b,c\n", "metadata.csv", "more cells than the header"),
        (b"key,label\na,b\na,c\n", "metadata.csv", "given twice"),
    ],
)
def test_bad_sidecars_are_refused_with_the_reason(data: bytes, name: str, words: str) -> None:
    with pytest.raises(InvalidParameter) as err:
        parse_sidecar(data, name)
    assert words in err.value.reason and name in err.value.reason
