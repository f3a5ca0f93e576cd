"""The per-partition metadata table: build, write, memory-map, check (common/metatable.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from simsearch.common.errors import CorruptIndex
from simsearch.common.metadata import Schema
from simsearch.common.metatable import (
    ID_COLUMN,
    arrow_schema,
    build_table,
    filter_mask,
    open_table,
    write_table,
)

SCHEMA: Schema = {"key": "string", "size": "int", "mtime": "time", "score": "float", "ok": "bool"}
ROWS: list[dict[str, Any]] = [
    {"key": "a.jpg", "size": 10, "mtime": datetime(2024, 1, 1, tzinfo=UTC), "score": 1, "ok": True},
    {"key": "b.jpg", "size": 20, "mtime": "2024-02-01T00:00:00Z", "score": 0.5},
    {"key": "c.jpg"},
]
IDS = np.array([7, 3, 11], dtype=np.int64)


def test_arrow_schema_has_the_id_column_first() -> None:
    schema = arrow_schema(SCHEMA)
    assert schema.names == [ID_COLUMN, *SCHEMA]
    assert schema.field("mtime").type == pa.timestamp("us", tz="UTC")
    assert schema.field("score").type == pa.float64()


def test_round_trip_keeps_rows_types_and_nulls(tmp_path: Path) -> None:
    path = tmp_path / "metadata.arrow"
    write_table(build_table(IDS, ROWS, SCHEMA), path)
    table = open_table(path, IDS)
    assert table.column(ID_COLUMN).to_pylist() == [7, 3, 11]
    assert table.column("key").to_pylist() == ["a.jpg", "b.jpg", "c.jpg"]
    assert table.column("size").to_pylist() == [10, 20, None]
    assert table.column("score").to_pylist() == [1.0, 0.5, None]
    assert table.column("ok").to_pylist() == [True, None, None]
    assert table.column("mtime").to_pylist() == [
        datetime(2024, 1, 1, tzinfo=UTC),
        datetime(2024, 2, 1, tzinfo=UTC),
        None,
    ]


def test_the_file_is_an_uncompressed_arrow_ipc_file(tmp_path: Path) -> None:
    path = tmp_path / "metadata.arrow"
    write_table(build_table(IDS, ROWS, SCHEMA), path)
    assert path.read_bytes()[:6] == b"ARROW1"
    reader = pa.ipc.open_file(pa.memory_map(str(path), "r"))
    assert reader.num_record_batches == 1


def test_same_rows_make_the_same_bytes(tmp_path: Path) -> None:
    """The indexer reuses an unchanged file by comparing checksums: writing is deterministic."""
    a, b = tmp_path / "a.arrow", tmp_path / "b.arrow"
    write_table(build_table(IDS, ROWS, SCHEMA), a)
    write_table(build_table(IDS, ROWS, SCHEMA), b)
    assert a.read_bytes() == b.read_bytes()


def test_misaligned_or_unreadable_tables_are_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "metadata.arrow"
    write_table(build_table(IDS, ROWS, SCHEMA), path)
    with pytest.raises(CorruptIndex, match="do not match"):
        open_table(path, IDS[::-1])
    with pytest.raises(CorruptIndex, match="do not match"):
        open_table(path, IDS[:2])
    junk = tmp_path / "junk.arrow"
    junk.write_bytes(b"not arrow at all")
    with pytest.raises(CorruptIndex, match="not a readable Arrow file"):
        open_table(junk)


def test_build_table_needs_one_row_per_id() -> None:
    with pytest.raises(ValueError, match="3 ids but 2"):
        build_table(IDS, ROWS[:2], SCHEMA)


def test_an_empty_partition_has_an_empty_table(tmp_path: Path) -> None:
    from simsearch.common.filters import Eq

    path = tmp_path / "metadata.arrow"
    write_table(build_table(np.zeros(0, np.int64), [], SCHEMA), path)
    table = open_table(path, np.zeros(0, np.int64))
    assert table.num_rows == 0 and table.schema.names == [ID_COLUMN, *SCHEMA]
    assert filter_mask(Eq(field="key", eq="a"), table).shape == (0,)
