"""`features.h5`: the exact vectors of one partition, in the old service's schema.

Datasets: `features` (N×D float32 or float16), `paths` (utf-8 strings) — as the original
single-process service wrote them, so its files stay readable — plus `ids` (int64, the
stable key ids). `features` is stored contiguous (no chunks, no compression) so that a
shard can memory-map it by file offset: re-ranking touches a few rows per query and the
page cache, not the process, holds the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from simsearch.common.errors import InvalidParameter

STRING = h5py.string_dtype("utf-8")


def write_features(
    path: Path, ids: np.ndarray, vectors: np.ndarray, paths: list[str], dtype: str = "float32"
) -> None:
    """Write one partition's vectors, ids and paths (rows in the same order)."""
    if not (len(ids) == len(vectors) == len(paths)):
        raise InvalidParameter(
            f"features.h5 rows disagree: {len(ids)} ids, {len(vectors)} vectors, {len(paths)} paths"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as h5:
        # contiguous layout: no chunks, no filters, so the data is one byte range
        h5.create_dataset("features", data=np.asarray(vectors, dtype=dtype))
        h5.create_dataset("ids", data=np.asarray(ids, dtype=np.int64))
        h5.create_dataset("paths", data=np.asarray(paths, dtype=object), dtype=STRING)


@dataclass
class FeatureFile:
    """A memory-mapped `features.h5`: rows by id without loading the file."""

    path: Path
    ids: np.ndarray
    vectors: np.ndarray  # np.memmap of `features`, read-only
    _order: np.ndarray
    _sorted_ids: np.ndarray

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Row numbers of `ids` (each must be present)."""
        if len(ids) and not len(self._sorted_ids):  # an empty partition holds none of them
            raise InvalidParameter(f"ids not in {self.path.name}")
        pos = np.searchsorted(self._sorted_ids, ids)
        pos = np.minimum(pos, len(self._sorted_ids) - 1)
        if len(ids) and not np.array_equal(self._sorted_ids[pos], ids):
            raise InvalidParameter(f"ids not in {self.path.name}")
        rows: np.ndarray = self._order[pos]
        return rows

    def paths(self, rows: np.ndarray) -> list[str]:
        """The stored paths of some rows (read on demand; strings are not memory-mapped)."""
        with h5py.File(self.path, "r") as h5:
            data = h5["paths"]
            return [
                data[int(r)].decode() if isinstance(data[int(r)], bytes) else str(data[int(r)])
                for r in rows
            ]


def open_features(path: Path) -> FeatureFile:
    """Open `features.h5` with `features` memory-mapped by its offset in the file."""
    with h5py.File(path, "r") as h5:
        dataset = h5["features"]
        offset = dataset.id.get_offset()
        if dataset.shape[0] == 0:  # an empty partition has no data block to map
            empty = np.zeros(dataset.shape, dtype=dataset.dtype)
            none = np.zeros(0, dtype=np.int64)
            return FeatureFile(path, none, empty, none, none)
        if offset is None or dataset.chunks is not None or dataset.compression is not None:
            raise InvalidParameter(f"{path}: 'features' is not contiguous; rebuild the index")
        shape, dtype = dataset.shape, dataset.dtype
        ids = np.asarray(h5["ids"][:], dtype=np.int64) if "ids" in h5 else np.arange(shape[0])
    vectors = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
    order = np.argsort(ids, kind="stable")
    return FeatureFile(path, ids, vectors, order, ids[order])
