"""Publish an index version with metadata tables, for tests of filtered search.

Independent of the indexer's own metadata step: `write_index` builds and publishes a
version without metadata, then `add_metadata` publishes a second version that references
the same partition files plus one `metadata.arrow` per partition (written with
`common.metatable.build_table` / `write_table`, rows in the order of each partition's
`features.h5`) and a manifest carrying the schema. The shard serves the second one.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from simsearch.common.features import open_features
from simsearch.common.layout import IndexLayout
from simsearch.common.manifest import Manifest, new_version_id
from simsearch.common.metadata import FieldType
from simsearch.common.metatable import METADATA_FILE, build_table, write_table

Rows = Mapping[int, Mapping[str, Any]]  # id -> that image's metadata


def add_metadata(
    layout: IndexLayout, base: Manifest, rows: Rows, schema: Mapping[str, FieldType]
) -> Manifest:
    """Publish a copy of `base` whose partitions carry metadata tables built from `rows`."""
    version = new_version_id()
    while version <= base.version:
        time.sleep(0.01)
        version = new_version_id()
    infos = []
    with tempfile.TemporaryDirectory(prefix="simsearch-meta-") as tmp:
        folder = Path(tmp)
        for info in base.partition_files:
            local = folder / f"{info.partition}.h5"
            layout.store.download_file(layout.resolve(info.features), local)
            ids = open_features(local).ids
            table = build_table(ids, [rows.get(int(i), {}) for i in ids], schema)
            path = folder / f"{info.partition}-{METADATA_FILE}"
            write_table(table, path)
            relative = layout.partition_relative(info.partition, METADATA_FILE)
            ref = layout.upload(version, relative, path)
            infos.append(info.model_copy(update={"metadata": ref}))
    data = base.model_dump(mode="json")
    data.update(
        version=version,
        parent=base.version,
        metadata=dict(schema),
        partition_files=[i.model_dump(mode="json") for i in infos],
    )
    manifest = Manifest.model_validate(data)
    layout.publish(manifest)
    return manifest


def filtered_truth(
    queries: np.ndarray,
    ids: np.ndarray,
    vectors: np.ndarray,
    selected: np.ndarray,
    k: int,
) -> list[list[int]]:
    """Brute-force top k of each query among the `selected` rows (bool mask over `ids`)."""
    rows = np.flatnonzero(selected)
    scores = queries @ vectors[rows].T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return [[int(ids[rows[j]]) for j in row] for row in top]
