"""Search filters: the typed JSON a query carries, its checks, and a reference evaluator.

A filter narrows a search to the images whose metadata (`common.metadata`) satisfies it::

    {"field": "label", "eq": "tulips"}
    {"field": "label", "in": ["tulips", "roses"]}
    {"field": "size", "range": {"gte": 10000, "lt": 500000}}
    {"field": "mtime", "range": {"gte": "2024-01-01T00:00:00Z"}}
    {"field": "key", "prefix": "photos/2024/"}
    {"and": [f, ...]}, {"or": [f, ...]}, {"not": f}

Who checks what, and why there:
- the *shape* is the pydantic model (`Filter`), so a body that is not a filter at all is a
  validation error like any other malformed field (422, naming the field);
- *fit and size* are `check_filter`, run by the router against the schema the shards
  report and again by the shard: an unknown field, a value of the wrong type, an operator
  the type lacks (`InvalidFilter`), or more than the limits below (`FilterTooLarge`) are a
  400 with a reason. Limits are checked here, not in the model, so that they answer 400
  with the limit named rather than a list of pydantic locations.

Semantics: a missing value (a field absent from an image's row) satisfies no condition,
and `not` inverts its operand's result, so `not {"field": "label", "eq": "x"}` matches
images without a label too. Strings compare exactly (case-sensitive). A time field compares
with ISO-8601 strings or epoch seconds.

`matches` is the reference evaluator over one row (a dict); the shard evaluates the same
semantics column-wise with pyarrow (`common.metatable.filter_mask`), and tests compare the
two.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from simsearch.common.errors import FilterTooLarge, InvalidFilter
from simsearch.common.metadata import FieldType, parse_time

__all__ = [
    "MAX_DEPTH",
    "MAX_IN_VALUES",
    "MAX_NODES",
    "MAX_STRING",
    "And",
    "Bounds",
    "Eq",
    "Filter",
    "In",
    "Not",
    "Or",
    "Prefix",
    "Range",
    "Scalar",
    "check_filter",
    "matches",
]

MAX_NODES = 64  # conditions and operators, all counted
MAX_DEPTH = 8
MAX_IN_VALUES = 256
MAX_STRING = 1024  # characters of any string value or prefix

Scalar = bool | int | float | str  # bool first: pydantic would read true as 1 otherwise


class _Node(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, serialize_by_alias=True
    )


class Eq(_Node):
    """`field` equals `eq`."""

    field: str
    eq: Scalar


class In(_Node):
    """`field` equals one of `in`."""

    field: str
    values: list[Scalar] = Field(alias="in", min_length=1)


def _bounds_schema(schema: dict[str, Any]) -> None:
    """The documented shape of `Bounds` is what it accepts: at least one bound, none null
    (else a fuzzer's schema-valid `{}` is refused with a 422)."""
    for name in ("gt", "gte", "lt", "lte"):
        schema["properties"][name] = {"anyOf": [{"type": "number"}, {"type": "string"}]}
    schema["minProperties"] = 1


class Bounds(_Node):
    """A numeric or time interval; at least one bound."""

    model_config = ConfigDict(json_schema_extra=_bounds_schema)

    gt: float | str | None = None
    gte: float | str | None = None
    lt: float | str | None = None
    lte: float | str | None = None

    @model_validator(mode="after")
    def _some_bound(self) -> Bounds:
        if all(v is None for v in (self.gt, self.gte, self.lt, self.lte)):
            raise ValueError("a range needs at least one of gt, gte, lt, lte")
        return self

    def items(self) -> list[tuple[str, float | str]]:
        """The bounds given, as (operator, value)."""
        pairs = [("gt", self.gt), ("gte", self.gte), ("lt", self.lt), ("lte", self.lte)]
        return [(op, v) for op, v in pairs if v is not None]


class Range(_Node):
    """`field` within `range` (ints, floats, times)."""

    field: str
    range: Bounds


class Prefix(_Node):
    """String `field` starts with `prefix` (e.g. a folder of keys)."""

    field: str
    prefix: str


class And(_Node):
    """Every operand holds."""

    all_of: list[Filter] = Field(alias="and", min_length=1)


class Or(_Node):
    """Some operand holds."""

    any_of: list[Filter] = Field(alias="or", min_length=1)


class Not(_Node):
    """The operand does not hold (missing values included)."""

    negated: Filter = Field(alias="not")


_TAGS = ("eq", "in", "range", "prefix", "and", "or", "not")


def _tag(value: Any) -> str | None:
    """Which node a filter object is, by the operator key it has (exactly one)."""
    if isinstance(value, BaseModel):
        return {
            Eq: "eq",
            In: "in",
            Range: "range",
            Prefix: "prefix",
            And: "and",
            Or: "or",
            Not: "not",
        }.get(type(value))
    if isinstance(value, dict):
        found = [t for t in _TAGS if t in value]
        return found[0] if len(found) == 1 else None
    return None


Filter = Annotated[
    Annotated[Eq, Tag("eq")]
    | Annotated[In, Tag("in")]
    | Annotated[Range, Tag("range")]
    | Annotated[Prefix, Tag("prefix")]
    | Annotated[And, Tag("and")]
    | Annotated[Or, Tag("or")]
    | Annotated[Not, Tag("not")],
    Discriminator(
        _tag,
        custom_error_type="invalid_filter",
        custom_error_message=(
            "a filter is an object with exactly one operator: eq, in, range, prefix, and, or, not"
        ),
    ),
]

for _model in (And, Or, Not):
    _model.model_rebuild()


# ---- checks against a schema


def check_filter(node: Filter, schema: Mapping[str, FieldType] | None) -> None:
    """Refuse a filter that does not fit `schema` or is over the limits (400 reasons).

    `schema` None means the version has no metadata at all (built before filters, or
    imported from a `features.h5` without it): any filter is refused, saying so.
    """
    if schema is None:
        raise InvalidFilter(
            "this collection's index version has no metadata to filter on; rebuild it "
            "with `simsearch index build` to get the built-in fields"
        )
    nodes = _count(node, 1)
    if nodes > MAX_NODES:
        raise FilterTooLarge(f"the filter has {nodes} nodes; at most {MAX_NODES} are allowed")
    _check(node, schema)


def _count(node: Filter, depth: int) -> int:
    """Nodes under (and including) `node`; FilterTooLarge past MAX_DEPTH."""
    if depth > MAX_DEPTH:
        raise FilterTooLarge(f"the filter nests deeper than {MAX_DEPTH} levels")
    if isinstance(node, And):
        return 1 + sum(_count(n, depth + 1) for n in node.all_of)
    if isinstance(node, Or):
        return 1 + sum(_count(n, depth + 1) for n in node.any_of)
    if isinstance(node, Not):
        return 1 + _count(node.negated, depth + 1)
    return 1


def _check(node: Filter, schema: Mapping[str, FieldType]) -> None:
    if isinstance(node, And | Or):
        for child in node.all_of if isinstance(node, And) else node.any_of:
            _check(child, schema)
    elif isinstance(node, Not):
        _check(node.negated, schema)
    else:
        kind = _field_type(node.field, schema)
        if isinstance(node, Eq):
            _check_value(node.field, kind, node.eq)
        elif isinstance(node, In):
            if len(node.values) > MAX_IN_VALUES:
                raise FilterTooLarge(
                    f"'in' on {node.field!r} has {len(node.values)} values; at most "
                    f"{MAX_IN_VALUES} are allowed"
                )
            for value in node.values:
                _check_value(node.field, kind, value)
        elif isinstance(node, Range):
            _check_range(node, kind)
        else:
            _check_prefix(node, kind)


def _field_type(name: str, schema: Mapping[str, FieldType]) -> FieldType:
    kind = schema.get(name)
    if kind is None:
        known = ", ".join(sorted(schema)) or "none"
        raise InvalidFilter(f"unknown filter field {name[:80]!r}; this collection has: {known}")
    return kind


def _check_value(name: str, kind: FieldType, value: Scalar) -> None:
    """`value` fits a field of type `kind`, or InvalidFilter naming both."""
    if isinstance(value, str) and len(value) > MAX_STRING:
        raise FilterTooLarge(
            f"a value for {name!r} has {len(value)} characters; at most {MAX_STRING}"
        )
    ok = {
        "string": isinstance(value, str),
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, int | float) and not isinstance(value, bool),
        "time": _is_time(value),
    }[kind]
    if not ok:
        raise InvalidFilter(
            f"filter field {name!r} is of type {kind}; {value!r} is a {_type_name(value)}"
            + (" (use an ISO-8601 string or epoch seconds)" if kind == "time" else "")
        )


def _check_range(node: Range, kind: FieldType) -> None:
    if kind not in ("int", "float", "time"):
        raise InvalidFilter(f"'range' needs a numeric or time field; {node.field!r} is {kind}")
    for _op, value in node.range.items():
        if kind == "int" and not _is_number(value):  # an int field takes any number bound
            _check_value(node.field, kind, value)
        _check_value(node.field, "float" if kind == "int" else kind, value)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_prefix(node: Prefix, kind: FieldType) -> None:
    if kind != "string":
        raise InvalidFilter(f"'prefix' needs a string field; {node.field!r} is {kind}")
    _check_value(node.field, kind, node.prefix)


def _is_time(value: object) -> bool:
    try:
        parse_time(value)
    except ValueError:
        return False
    return True


def _type_name(value: object) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string"}.get(
        type(value), type(value).__name__
    )


# ---- the reference evaluator


def matches(node: Filter, row: Mapping[str, Any], schema: Mapping[str, FieldType]) -> bool:
    """Whether one image's metadata `row` satisfies `node` (a checked filter).

    Row by row and slow: the definition the column-wise evaluation is tested against.
    """
    if isinstance(node, And):
        return all(matches(n, row, schema) for n in node.all_of)
    if isinstance(node, Or):
        return any(matches(n, row, schema) for n in node.any_of)
    if isinstance(node, Not):
        return not matches(node.negated, row, schema)
    value = row.get(node.field)
    if value is None:
        return False
    kind = schema[node.field]
    if isinstance(node, Eq):
        return _equal(value, node.eq, kind)
    if isinstance(node, In):
        return any(_equal(value, v, kind) for v in node.values)
    if isinstance(node, Prefix):
        return isinstance(value, str) and value.startswith(node.prefix)
    return all(_compare(value, op, bound, kind) for op, bound in node.range.items())


def _normal(value: Any, kind: FieldType) -> Any:
    """A value in the form comparisons use (times as aware datetimes)."""
    if kind == "time":
        return value if isinstance(value, datetime) else parse_time(value)
    return value


def _equal(value: Any, wanted: Any, kind: FieldType) -> bool:
    return bool(_normal(value, kind) == _normal(wanted, kind))


_OPS: dict[str, Any] = {
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
}


def _compare(value: Any, op: str, bound: Any, kind: FieldType) -> bool:
    return bool(_OPS[op](_normal(value, kind), _normal(bound, kind)))
