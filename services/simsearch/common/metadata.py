"""Per-image metadata: field types, the built-in fields, sidecar files, schema inference.

What a filter can ask about an image (`common.filters`) is its metadata: a few built-in
fields the indexer always knows (`key`, `size`, `mtime`, `content_type`) and the user's own,
read from a sidecar next to the images (`metadata.jsonl` or `metadata.csv`, one row per
image, column `key` = the image's path relative to the images root) and/or S3 object tags.

The schema (field -> type) is recorded in the manifest, so the router can refuse a filter
that does not fit before any shard is asked, and every shard reads its partitions' columns
with the same types. This module needs no pyarrow (the router imports it through the wire
models); the columnar table itself is `common.metatable`.

Types are deliberately few: "string", "int", "float", "bool" and "time" (UTC, held as
microseconds). Values of a field are inferred from the sidecar: ints and floats mixed make
"float"; anything else mixed is refused with the field's name, because guessing a type
would make filters silently match nothing.
"""

from __future__ import annotations

import csv
import io
import json
import mimetypes
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from simsearch.common.errors import InvalidParameter

__all__ = [
    "BUILTIN_FIELDS",
    "FIELD_TYPES",
    "SIDECAR_NAMES",
    "FieldType",
    "Schema",
    "builtin_row",
    "content_type_of",
    "infer_schema",
    "is_field_name",
    "parse_sidecar",
    "parse_time",
]

FieldType = Literal["string", "int", "float", "bool", "time"]
FIELD_TYPES: tuple[FieldType, ...] = get_args(FieldType)
Schema = dict[str, FieldType]

# always present in a version built with metadata; the user's fields may not shadow them
BUILTIN_FIELDS: Schema = {"key": "string", "size": "int", "mtime": "time", "content_type": "string"}
SIDECAR_NAMES = ("metadata.jsonl", "metadata.csv")  # looked for at the images root, in order

_FIELD_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.:-]{0,63}$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]|$)")
_INT_RE = re.compile(r"^[+-]?\d{1,18}$")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_FLOAT_RE = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?$")


def is_field_name(name: str) -> bool:
    """1-64 characters, a letter first, then letters, digits, `_ . : -` (names starting
    with `_` are the table's own, such as its id column)."""
    return bool(_FIELD_RE.match(name))


def content_type_of(key: str) -> str:
    """The content type a key's suffix names ("application/octet-stream" if unknown).

    From the suffix, not a HEAD per object: the indexer already trusts suffixes to find
    images, and a million HEAD requests would cost more than the embedding's I/O.
    """
    guessed, _ = mimetypes.guess_type(key)
    return guessed or "application/octet-stream"


def builtin_row(key: str, size: int, mtime: datetime | None) -> dict[str, Any]:
    """The built-in fields of one image."""
    return {"key": key, "size": size, "mtime": mtime, "content_type": content_type_of(key)}


def parse_time(value: object) -> datetime:
    """A time value of a filter or a sidecar: an ISO-8601 string or epoch seconds, as UTC.

    A string without a zone is read as UTC (the indexer's clocks are UTC throughout).
    """
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, bool):
        raise ValueError("a boolean is not a time")
    elif isinstance(value, int | float):
        return datetime.fromtimestamp(float(value), UTC)
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{value[:40]!r} is not an ISO-8601 time") from None
    else:
        raise ValueError(f"{type(value).__name__} is not a time")
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _type_of(value: object) -> FieldType | None:
    """The field type a sidecar value has (None for a missing value)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ValueError(f"{value} is outside the 64-bit integer range")
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, datetime):
        return "time"
    if isinstance(value, str):
        return "string"
    raise ValueError(f"{type(value).__name__} values are not supported (use a scalar)")


def infer_schema(rows: Sequence[Mapping[str, Any]]) -> Schema:
    """The user fields' types over all rows (built-ins and `key` excluded).

    A string field whose every value starts with an ISO date (`2024-05-01...`) is a
    "time" field, so that ranges over dates work on sidecars, which have no time type.
    InvalidParameter naming the field when its values have two types (ints and floats
    mixed are "float"), when a value is not a scalar, or when a name is not a field name
    or shadows a built-in.
    """
    found: dict[str, FieldType] = {}
    for row in rows:
        for name, value in row.items():
            if name == "key":
                continue
            try:
                kind = _type_of(value)
            except ValueError as err:
                raise InvalidParameter(f"metadata field {name!r}: {err}") from None
            if kind is not None:
                found[name] = _unify(name, found.get(name), kind)
    for name in found:
        _check_user_field(name)
    for name in [n for n, kind in found.items() if kind == "string"]:
        if _all_times(row.get(name) for row in rows):
            found[name] = "time"
    return dict(sorted(found.items()))


def _all_times(values: Iterable[object]) -> bool:
    """Every present value is an ISO date/time string."""
    for value in values:
        if value is None:
            continue
        if not isinstance(value, str) or not _DATE_RE.match(value):
            return False
        try:
            parse_time(value)
        except ValueError:
            return False
    return True


def _unify(name: str, known: FieldType | None, kind: FieldType) -> FieldType:
    """One type for a field seen with `known` so far and now `kind`."""
    if known is None or known == kind:
        return kind
    if {known, kind} == {"int", "float"}:
        return "float"
    raise InvalidParameter(
        f"metadata field {name!r} has both {known} and {kind} values; give it one type"
    )


def _check_user_field(name: str) -> None:
    if name in BUILTIN_FIELDS:
        raise InvalidParameter(
            f"metadata field {name!r} is a built-in field ({', '.join(BUILTIN_FIELDS)}); "
            "rename it in the sidecar"
        )
    if not is_field_name(name):
        raise InvalidParameter(
            f"metadata field name {name[:70]!r} is not allowed: use 1-64 letters, digits, "
            "'_', '.', ':' or '-', starting with a letter"
        )


def parse_sidecar(data: bytes, name: str) -> dict[str, dict[str, Any]]:
    """Rows of a `metadata.jsonl` or `metadata.csv` sidecar, by image key.

    JSON lines keep their JSON types; CSV cells become int, float or bool when they
    read as one ("true"/"false"), else strings; empty cells are missing values. A key
    given twice, a row without a string `key`, or a line that does not parse is refused
    with its line number.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InvalidParameter(f"{name} is not UTF-8: {err}") from None
    rows = _jsonl_rows(text, name) if name.endswith(".jsonl") else _csv_rows(text, name)
    out: dict[str, dict[str, Any]] = {}
    for line, row in rows:
        key = row.get("key")
        if not isinstance(key, str) or not key:
            raise InvalidParameter(f"{name} line {line}: every row needs a string 'key'")
        if key in out:
            raise InvalidParameter(f"{name} line {line}: key {key[:80]!r} is given twice")
        out[key] = {k: v for k, v in row.items() if k != "key"}
    return out


def _jsonl_rows(text: str, name: str) -> Iterable[tuple[int, dict[str, Any]]]:
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as err:
            raise InvalidParameter(f"{name} line {line}: not JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise InvalidParameter(f"{name} line {line}: each line must be a JSON object")
        yield line, row


def _csv_rows(text: str, name: str) -> Iterable[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or "key" not in reader.fieldnames:
        raise InvalidParameter(f"{name}: the header must have a 'key' column")
    for row in reader:
        if None in row:
            raise InvalidParameter(f"{name} line {reader.line_num}: more cells than the header")
        # the key stays the string it is (a key "0001" must not become the number 1)
        cells = {k: v if k == "key" else _cell(v) for k, v in row.items() if v not in ("", None)}
        yield reader.line_num, cells


def _cell(value: str) -> Any:
    """A CSV cell as the scalar it reads as."""
    if _INT_RE.match(value):
        return int(value)
    if _FLOAT_RE.match(value):
        return float(value)
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value
