"""A partition's metadata as a column table: built by the indexer, memory-mapped by the shard.

One Arrow IPC *file* per partition (`metadata.arrow`, uncompressed), row i describing row
i of the partition's `features.h5` (its `id` column repeats the id, so a mismatch is caught
at load rather than answering with another image's metadata). Arrow because the shard can
map it without a copy (`pa.memory_map` + `ipc.open_file`: the page cache holds it, like the
FAISS lists) and evaluate a filter column-wise in C++ (`pyarrow.compute`), a few ms for
100k rows even on string columns.

`filter_mask` evaluates a checked filter (`common.filters`) with the reference semantics
of `filters.matches`: missing values satisfy nothing, `not` inverts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import reduce
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from simsearch.common.errors import CorruptIndex
from simsearch.common.filters import And, Eq, Filter, In, Not, Or, Prefix, Range
from simsearch.common.metadata import FieldType, parse_time

__all__ = [
    "ID_COLUMN",
    "METADATA_FILE",
    "arrow_schema",
    "build_table",
    "filter_mask",
    "open_table",
    "write_table",
]

METADATA_FILE = "metadata.arrow"
ID_COLUMN = "_id"  # never a field name: those start with a letter

_TIME = pa.timestamp("us", tz="UTC")
_ARROW: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "time": _TIME,
}


def arrow_schema(schema: Mapping[str, FieldType]) -> pa.Schema:
    """The table's Arrow schema: the id column, then each field in schema order."""
    fields = [pa.field(ID_COLUMN, pa.int64(), nullable=False)]
    fields += [pa.field(name, _ARROW[kind]) for name, kind in schema.items()]
    return pa.schema(fields)


def build_table(
    ids: np.ndarray, rows: Sequence[Mapping[str, Any]], schema: Mapping[str, FieldType]
) -> pa.Table:
    """The table of one partition: `rows[i]` is the metadata of `ids[i]` (missing: null)."""
    if len(ids) != len(rows):
        raise ValueError(f"{len(ids)} ids but {len(rows)} metadata rows")
    columns: list[pa.Array] = [pa.array(np.asarray(ids, np.int64), pa.int64())]
    for name, kind in schema.items():
        values = [_to_arrow(row.get(name), kind) for row in rows]
        columns.append(pa.array(values, _ARROW[kind]))
    return pa.Table.from_arrays(columns, schema=arrow_schema(schema))


def _to_arrow(value: Any, kind: FieldType) -> Any:
    if value is None:
        return None
    if kind == "time":
        return parse_time(value)
    if kind == "float":
        return float(value)
    return value


def write_table(table: pa.Table, path: Path) -> None:
    """Write `table` as an uncompressed Arrow IPC file (memory-mappable as it is)."""
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def open_table(path: Path, ids: np.ndarray | None = None) -> pa.Table:
    """Memory-map a partition's table; with `ids`, check that it describes those rows.

    CorruptIndex when the file is not an Arrow file or its id column differs: serving a
    filter from misaligned metadata would return images that do not satisfy it.
    """
    try:
        table = pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()
    except (pa.ArrowInvalid, OSError) as err:
        raise CorruptIndex(f"{path} is not a readable Arrow file: {err}") from err
    if ids is not None:
        stored = table.column(ID_COLUMN).to_numpy() if ID_COLUMN in table.column_names else None
        if stored is None or len(stored) != len(ids) or not np.array_equal(stored, ids):
            raise CorruptIndex(f"{path}: its rows do not match the partition's ids")
    return table


def filter_mask(node: Filter, table: pa.Table) -> np.ndarray:
    """Which rows of `table` satisfy the checked filter `node` (bool array, one per row)."""
    if table.num_rows == 0:
        return np.zeros(0, dtype=bool)
    mask = _mask(node, table)
    return np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool)


def _mask(node: Filter, table: pa.Table) -> Any:
    """A boolean array without nulls (a missing value is False before any `not`)."""
    if isinstance(node, And):
        return reduce(pc.and_, (_mask(n, table) for n in node.all_of))
    if isinstance(node, Or):
        return reduce(pc.or_, (_mask(n, table) for n in node.any_of))
    if isinstance(node, Not):
        return pc.invert(_mask(node.negated, table))
    column = table.column(node.field)
    if isinstance(node, Eq):
        found = pc.equal(column, _scalar(node.eq, column.type))
    elif isinstance(node, In):
        wanted = pa.array([_value(v, column.type) for v in node.values], column.type)
        found = pc.is_in(column, value_set=wanted)
    elif isinstance(node, Prefix):
        found = pc.starts_with(column, pattern=node.prefix)
    else:
        found = _range(node, column)
    return pc.fill_null(found, False)


_COMPARE = {"gt": pc.greater, "gte": pc.greater_equal, "lt": pc.less, "lte": pc.less_equal}


def _range(node: Range, column: Any) -> Any:
    """Every bound of a range, combined; an int column compares with float bounds as floats."""
    target = pa.float64() if pa.types.is_integer(column.type) else column.type
    values = pc.cast(column, target) if target != column.type else column
    parts = [_COMPARE[op](values, _scalar(bound, target)) for op, bound in node.range.items()]
    return reduce(pc.and_, parts)


def _value(value: Any, kind: pa.DataType) -> Any:
    """A filter value as the column's type wants it."""
    if kind == _TIME:
        return parse_time(value)
    if pa.types.is_floating(kind):
        return float(value)
    return value


def _scalar(value: Any, kind: pa.DataType) -> pa.Scalar:
    return pa.scalar(_value(value, kind), type=kind)
