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
import h5py
import numpy as np

from simsearch.common.errors import InvalidParameter
from simsearch.common.features import write_features
from simsearch.common.ids import partition_of_many
from simsearch.common.layout import (
    FEATURES_FILE,
    INDEX_FILE,
    TRAINED_FILE,
    FileRef,
    IndexLayout,
    IndexParams,
    Manifest,
    ModelInfo,
    PartitionInfo,
    new_version_id,
    verify_file,
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
    base: Manifest | None = None,
    retrain: bool = False,
) -> Manifest:
    """Build every partition from one template and publish a new version.

    With `base` (incremental build) the base's template is reused unless `retrain`, and a
    partition whose ids did not change is referenced from the base instead of rewritten.
    """
    n, dim = vectors.shape
    if len(ids) != n or len(paths) != n:
        raise InvalidParameter(f"{n} vectors but {len(ids)} ids and {len(paths)} paths")
    if len(np.unique(ids)) != n:
        raise InvalidParameter("ids are not unique (two keys with the same id?)")
    if dim != model.dim:
        raise InvalidParameter(f"vectors have dim {dim}, the model says {model.dim}")
    reuse = base is not None and not retrain and base.partitions == partitions
    x = normalise(vectors)
    version = _next_version(base)
    owner = partition_of_many(np.asarray(ids, dtype=np.int64), partitions)
    with tempfile.TemporaryDirectory(dir=workdir, prefix="simsearch-build-") as tmp:
        folder = Path(tmp)
        if reuse and base is not None:
            template, trained, params = _base_template(layout, base, folder)
        else:
            params = params or choose_plan(n, dim)
            template = _train(x, params)
            faiss.write_index(template, str(folder / TRAINED_FILE))
            trained = layout.upload(version, TRAINED_FILE, folder / TRAINED_FILE)
        infos = []
        for p in range(partitions):
            rows = np.flatnonzero(owner == p)
            same = reuse and base is not None and _unchanged(base, p, ids[rows], folder, layout)
            infos.append(
                base.partition_files[p]  # type: ignore[union-attr]
                if same
                else _write_partition(
                    layout, version, folder, template, p, rows, ids, x, paths, dtype
                )
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
        parent=base.version if base is not None else None,
    )
    layout.publish(manifest)
    log.info("published %s: %d vectors in %d partitions", version, n, partitions)
    return manifest


def _next_version(base: Manifest | None) -> str:
    """A new version id that sorts after the base's (ids made in the same second may not)."""
    version = new_version_id()
    while base is not None and version <= base.version:
        time.sleep(0.01)
        version = new_version_id()
    return version


def _train(x: np.ndarray, params: IndexParams) -> faiss.Index:
    started = time.perf_counter()
    sample = x[sample_rows(len(x), max(params.train_size, params.nlist or 1))]
    template = train_template(sample, params)
    log.info(
        "trained %s on %d vectors in %.1fs",
        params.factory,
        len(sample),
        time.perf_counter() - started,
    )
    return template


def _base_template(
    layout: IndexLayout, base: Manifest, folder: Path
) -> tuple[faiss.Index, FileRef, IndexParams]:
    """The base version's trained template, reused as is (no retraining, no re-upload)."""
    path = folder / TRAINED_FILE
    layout.store.download_file(layout.resolve(base.trained), path)
    verify_file(path, base.trained)
    return faiss.read_index(str(path)), base.trained, base.params


def _unchanged(base: Manifest, p: int, ids: np.ndarray, folder: Path, layout: IndexLayout) -> bool:
    """Whether partition p holds exactly the same ids as in the base version."""
    info = base.partition_files[p]
    if info.count != len(ids):
        return False
    path = folder / f"base-{p}-{FEATURES_FILE}"
    if not path.exists():
        layout.store.download_file(layout.resolve(info.features), path)
    with h5py.File(path, "r") as h5:
        old = np.asarray(h5["ids"][:], dtype=np.int64)
    return bool(np.array_equal(np.sort(old), np.sort(ids)))


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
