"""Read a published version's metadata back, partition by partition, next to its features.

What the indexer tests check: every partition's `metadata.arrow` is there, verified
against the manifest, and describes exactly the rows of its `features.h5`, in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simsearch.common.features import open_features
from simsearch.common.layout import IndexLayout
from simsearch.common.manifest import Manifest, verify_file
from simsearch.common.metatable import open_table

__all__ = ["PartitionRows", "read_partitions", "rows_by_key"]


@dataclass
class PartitionRows:
    """One partition's ids and keys (features.h5 order) and its metadata rows."""

    partition: int
    ids: np.ndarray
    keys: list[str]
    rows: list[dict[str, Any]]


def read_partitions(layout: IndexLayout, manifest: Manifest, folder: Path) -> list[PartitionRows]:
    """Every partition's features and metadata, checked to be aligned (`open_table(ids)`)."""
    out = []
    for info in manifest.partition_files:
        assert info.metadata is not None, f"partition {info.partition} has no metadata file"
        table_path = folder / f"{info.partition}-metadata.arrow"
        layout.store.download_file(layout.resolve(info.metadata), table_path)
        verify_file(table_path, info.metadata)
        ids, keys = np.zeros(0, np.int64), []
        if info.count:
            features_path = folder / f"{info.partition}-features.h5"
            layout.store.download_file(layout.resolve(info.features), features_path)
            features = open_features(features_path)
            ids = np.asarray(features.ids, np.int64)
            keys = list(features.paths(np.arange(len(ids))))
        table = open_table(table_path, ids)  # raises unless row i describes ids[i]
        rows = table.drop_columns(["_id"]).to_pylist()
        out.append(PartitionRows(info.partition, ids, keys, rows))
    return out


def rows_by_key(parts: list[PartitionRows]) -> dict[str, dict[str, Any]]:
    """key → metadata row over all partitions, after checking each row's key is its image's."""
    out: dict[str, dict[str, Any]] = {}
    for part in parts:
        for key, row in zip(part.keys, part.rows, strict=True):
            assert row["key"] == key
            out[key] = row
    return out
