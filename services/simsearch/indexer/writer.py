"""Write vectors as a published index version: train → fill partitions → upload → publish.

Used by `simsearch index build` (after embedding) and `simsearch index import-h5` (vectors
from an old `features.h5`), and by tests that need a real index quickly. Files are made
in a local work folder, uploaded with their sha256, and the version becomes visible only
when `IndexLayout.publish` flips `CURRENT`.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import faiss
import numpy as np

from simsearch.common.errors import InvalidParameter
from simsearch.common.features import write_features
from simsearch.common.ids import partition_of_many
from simsearch.common.layout import (
    FEATURES_FILE,
    INDEX_FILE,
    TRAINED_FILE,
    IndexLayout,
    IndexParams,
    Manifest,
    ModelInfo,
    PartitionInfo,
    new_version_id,
)
from simsearch.indexer.faissbuild import (
    choose_plan,
    fill_partition,
    train_template,
    write_partition,
)

log = logging.getLogger(__name__)

Progress = Callable[[int], None]  # called with the number of partitions just finished


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Unit rows (cosine = inner product); refuses NaN/inf and zero vectors."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if not np.isfinite(x).all():
        raise InvalidParameter("vectors contain NaN or infinity")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        raise InvalidParameter("vectors contain all-zero rows")
    unit: np.ndarray = x / norms
    return unit


def sample_rows(n: int, size: int, seed: int = 0) -> np.ndarray:
    """A reproducible random sample of row numbers (sorted, for sequential reads)."""
    if size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def write_index(
    layout: IndexLayout,
    ids: np.ndarray,
    vectors: np.ndarray,
    paths: Sequence[str],
    model: ModelInfo,
    partitions: int = 64,
    params: IndexParams | None = None,
    dtype: str = "float32",
    source: str | None = None,
    progress: Progress | None = None,
    workdir: Path | None = None,
) -> Manifest:
    """Build every partition from one template and publish a new version."""
    n, dim = vectors.shape
    if len(ids) != n or len(paths) != n:
        raise InvalidParameter(f"{n} vectors but {len(ids)} ids and {len(paths)} paths")
    if len(np.unique(ids)) != n:
        raise InvalidParameter("ids are not unique (two keys with the same id?)")
    if dim != model.dim:
        raise InvalidParameter(f"vectors have dim {dim}, the model says {model.dim}")
    x = normalise(vectors)
    params = params or choose_plan(n, dim)
    version = new_version_id()
    started = time.perf_counter()
    template = train_template(x[sample_rows(n, max(params.train_size, params.nlist or 1))], params)
    log.info(
        "trained %s on %d vectors in %.1fs",
        params.factory,
        params.train_size,
        time.perf_counter() - started,
    )
    with tempfile.TemporaryDirectory(dir=workdir, prefix="simsearch-build-") as tmp:
        folder = Path(tmp)
        faiss.write_index(template, str(folder / TRAINED_FILE))
        trained = layout.upload(version, TRAINED_FILE, folder / TRAINED_FILE)
        owner = partition_of_many(np.asarray(ids, dtype=np.int64), partitions)
        infos = []
        for p in range(partitions):
            rows = np.flatnonzero(owner == p)
            infos.append(
                _write_partition(layout, version, folder, template, p, rows, ids, x, paths, dtype)
            )
            if progress is not None:
                progress(1)
    manifest = Manifest(
        index_name=layout.name,
        version=version,
        created=datetime.now(UTC),
        model=model,
        params=params,
        partitions=partitions,
        total=n,
        dtype=dtype,  # type: ignore[arg-type]
        trained=trained,
        partition_files=infos,
        source=source,
    )
    layout.publish(manifest)
    log.info("published %s: %d vectors in %d partitions", version, n, partitions)
    return manifest


def _write_partition(
    layout: IndexLayout,
    version: str,
    folder: Path,
    template: faiss.Index,
    p: int,
    rows: np.ndarray,
    ids: np.ndarray,
    x: np.ndarray,
    paths: Sequence[str],
    dtype: str,
) -> PartitionInfo:
    """One partition's index.faiss and features.h5, uploaded; local copies removed."""
    index_path = folder / f"{p}-{INDEX_FILE}"
    features_path = folder / f"{p}-{FEATURES_FILE}"
    write_partition(fill_partition(template, ids[rows], x[rows]), index_path)
    write_features(features_path, ids[rows], x[rows], [paths[r] for r in rows], dtype)
    index_ref = layout.upload(version, layout.partition_relative(p, INDEX_FILE), index_path)
    features_ref = layout.upload(
        version, layout.partition_relative(p, FEATURES_FILE), features_path
    )
    index_path.unlink()
    features_path.unlink()
    return PartitionInfo(partition=p, count=len(rows), index=index_ref, features=features_ref)
