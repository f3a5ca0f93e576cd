"""`simsearch index import-h5`: the old service's `features.h5` becomes a published index.

The old single-process service stored ResNet50 features as `features` (N×D) and `paths`
(strings) in one HDF5 file. Importing re-uses those vectors as they are (no re-embedding):
ids come from the paths exactly as a build would derive them from object keys, so a later
incremental build over the same images recognises every imported image.

Metadata: the file has paths only, so the version's schema is `key` and `content_type`
(from the suffix); `size` and `mtime` are left out rather than made up, so a filter on
them is refused by name instead of silently matching nothing. The next `index build` over
the images gives the version every built-in field (and the sidecar's).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from simsearch.common.errors import InvalidParameter
from simsearch.common.ids import key_ids
from simsearch.common.layout import IndexLayout
from simsearch.common.manifest import Manifest, ModelInfo
from simsearch.indexer.metadata import key_metadata
from simsearch.indexer.settings import DEFAULT_PARTITIONS
from simsearch.indexer.writer import Progress, write_index

OLD_SERVICE_MODEL = "resnet50"  # what the old service embedded with (2048-d)


def read_old_features(path: Path) -> tuple[np.ndarray, list[str]]:
    """`features` and `paths` of an old `features.h5`, checked for consistency."""
    with h5py.File(path, "r") as h5:
        missing = {"features", "paths"} - set(h5)
        if missing:
            raise InvalidParameter(f"{path} lacks dataset(s) {sorted(missing)}")
        vectors = np.asarray(h5["features"][:], dtype=np.float32)
        paths = [p.decode() if isinstance(p, bytes) else str(p) for p in h5["paths"][:]]
    if vectors.ndim != 2 or len(vectors) != len(paths):
        raise InvalidParameter(
            f"{path}: features has shape {vectors.shape} but there are {len(paths)} paths"
        )
    if len(set(paths)) != len(paths):
        raise InvalidParameter(f"{path}: paths are not unique")
    return vectors, paths


def import_h5(
    path: Path,
    layout: IndexLayout,
    model: str = OLD_SERVICE_MODEL,
    partitions: int = DEFAULT_PARTITIONS,
    progress: Progress | None = None,
) -> Manifest:
    """Publish the vectors of an old `features.h5` as a new version of `layout`'s index."""
    vectors, paths = read_old_features(path)
    info = ModelInfo(name=model, dim=vectors.shape[1], preprocessing={})
    return write_index(
        layout,
        key_ids(paths),
        vectors,
        paths,
        info,
        partitions=partitions,
        source=f"import-h5:{path.name}",
        progress=progress,
        metadata=key_metadata(),
    )
