"""Write vectors as a published index version: train → fill partitions → upload → publish.

Used by `simsearch index build` (after embedding) and `simsearch index import-h5` (vectors
from an old `features.h5`), and by tests that need a real index quickly. Files are made
in a local work folder, uploaded with their sha256, and the version becomes visible only
when `IndexLayout.publish` flips `CURRENT`. Given a build's `Metadata`, every partition
also gets its `metadata.arrow` (docs/indexing.md#metadata).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import h5py
import numpy as np

from simsearch.common.ann import Template
from simsearch.common.errors import InvalidParameter
from simsearch.common.features import write_features
from simsearch.common.ids import partition_of_many
from simsearch.common.layout import FEATURES_FILE, INDEX_FILE, TRAINED_FILE, IndexLayout
from simsearch.common.manifest import (
    FileRef,
    IndexParams,
    Manifest,
    ModelInfo,
    PartitionInfo,
    RecallProbe,
    new_version_id,
    sha256_file,
    verify_file,
)
from simsearch.common.metatable import METADATA_FILE
from simsearch.indexer.drift import Fit, measure
from simsearch.indexer.faissbuild import (
    choose_params,
    fill_partition,
    train_template,
    write_partition,
)
from simsearch.indexer.metadata import Metadata, partition_table
from simsearch.indexer.probe import TARGET_RECALL, probe_version
from simsearch.indexer.settings import DEFAULT_PARTITIONS

BUILD_WORKERS = min(4, os.cpu_count() or 1)  # partitions written at once
PROJECT_BLOCK = 65_536  # rows projected at a time (bounds the float32 copies)

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
    partitions: int = DEFAULT_PARTITIONS,
    params: IndexParams | None = None,
    dtype: str = "auto",
    source: str | None = None,
    progress: Progress | None = None,
    workdir: Path | None = None,
    base: Manifest | None = None,
    retrain: bool = False,
    probe_recall: bool = True,
    workers: int = BUILD_WORKERS,
    recall_target: float = TARGET_RECALL,
    metadata: Metadata | None = None,
    fresh: np.ndarray | None = None,
    on_fit: Callable[[Fit], None] | None = None,
    space: str = "raw",
) -> Manifest:
    """Build every partition from one template and publish a new version.

    With `base` the base's template is reused unless `retrain`, and so is a partition whose
    ids did not change (and its metadata table when the bytes are the same). `dtype` "auto"
    stores float16 features in a PCA space (recall unchanged: docs/benchmarks.md §8),
    float32 in the raw one. `workers` threads write partitions; `probe_recall` measures
    recall@10 and sets the default nprobe. No `metadata`: a version without (no filters).
    The drift baseline (`drift.measure`) goes into `centroid_fit`; `fresh` (the rows
    embedded by this build) and `on_fit` (given the figures) serve the `--retrain` advice.
    `space` "index": the vectors are already in the scoring space of `base`'s template
    (what a PCA version's features.h5 holds), so that template must be reused.
    """
    same_shape = base if base is not None and base.partitions == partitions else None
    reuse = None if retrain else same_shape
    ids = _checked_ids(ids, vectors, paths, _expected_dim(model, space, reuse))
    version = _next_version(base)
    with tempfile.TemporaryDirectory(dir=workdir, prefix="simsearch-build-") as tmp:
        folder = Path(tmp)
        template, trained, params, trained_rows = _template_for(
            layout, version, folder, vectors, params, reuse
        )
        stored = _stored_dtype(dtype, template)
        projected = space == "index"
        y = _scoring_vectors(template, vectors, stored, projected)  # checks the vectors too
        fit = measure(template, vectors, trained_rows, reuse, fresh, projected)
        build = _PartitionBuild(layout, version, folder, template, ids, y, paths, stored)
        build.metadata, build.base = metadata, same_shape
        probe_index = template.empty() if probe_recall and template.nlist > 1 else None
        infos = _write_partitions(build, partitions, reuse, probe_index, progress, workers)
        params, found = probe_version(template, probe_index, ids, y, params, recall_target)
    manifest = build.manifest(model, params, trained, infos, base, found, fit, source)
    layout.publish(manifest)
    log.info("published %s: %d vectors in %d partitions", version, len(ids), partitions)
    if on_fit is not None:
        on_fit(fit)
    return manifest


def _write_partitions(
    build: _PartitionBuild,
    partitions: int,
    reuse: Manifest | None,
    probe_index: Any,
    progress: Progress | None,
    workers: int,
) -> list[PartitionInfo]:
    """Every partition, written (or referenced from `reuse`) by `workers` threads."""
    one = _partition_step(build, partition_of_many(build.ids, partitions), reuse, probe_index)
    with ThreadPoolExecutor(max(1, workers), "partition") as pool:
        return list(pool.map(lambda p: _counted(one(p), progress), range(partitions)))


def _checked_ids(
    ids: np.ndarray, vectors: np.ndarray, paths: Sequence[str], expected: int
) -> np.ndarray:
    """`ids` as int64, once they, the paths and the expected dim agree with the vectors."""
    n, dim = vectors.shape
    if len(ids) != n or len(paths) != n:
        raise InvalidParameter(f"{n} vectors but {len(ids)} ids and {len(paths)} paths")
    if len(np.unique(ids)) != n:
        raise InvalidParameter("ids are not unique (two keys with the same id?)")
    if dim != expected:
        raise InvalidParameter(f"vectors have dim {dim}, the index expects {expected}")
    return np.asarray(ids, dtype=np.int64)


def _expected_dim(model: ModelInfo, space: str, reuse: Manifest | None) -> int:
    """The model's dim for raw vectors; for vectors in an index's scoring space ("index"),
    the reused template's: such vectors cannot train a new template (no PCA from them)."""
    if space == "raw":
        return model.dim
    if space != "index":
        raise InvalidParameter(f"vector space {space!r}: use raw or index")
    if reuse is None:
        raise InvalidParameter(
            "vectors in an index's scoring space need that index's template reused "
            "(a base with the same partitions, no retraining)"
        )
    return reuse.params.pca_dim or model.dim


def _template_for(
    layout: IndexLayout,
    version: str,
    folder: Path,
    vectors: np.ndarray,
    params: IndexParams | None,
    reuse: Manifest | None,
) -> tuple[Template, FileRef, IndexParams, np.ndarray | None]:
    """The base's template when it is reused, else one trained now and uploaded; with the
    rows it was trained on (None: reused), the drift baseline's sample."""
    if reuse is not None:
        return *_base_template(layout, reuse, folder), None
    n, dim = vectors.shape
    params = params or choose_params(n, dim)
    template, rows = _train(vectors, params, n)
    faiss.write_index(template.root, str(folder / TRAINED_FILE))
    trained = layout.upload(version, TRAINED_FILE, folder / TRAINED_FILE)
    return template, trained, params, rows


def _counted(info: PartitionInfo, progress: Progress | None) -> PartitionInfo:
    """Report one finished partition to `progress` (the build's bar)."""
    if progress is not None:
        progress(1)
    return info


def _partition_step(
    build: _PartitionBuild, owner: np.ndarray, reuse: Manifest | None, probe_index: Any
) -> Callable[[int], PartitionInfo]:
    """What one pool thread does for partition p: reference the base's files when p holds
    the same ids as there, else write it; either way merge it into the probe index."""

    def one(p: int) -> PartitionInfo:
        rows = np.flatnonzero(owner == p)
        ids = build.ids[rows]
        old = None if reuse is None else _unchanged(reuse, p, ids, build.folder, build.layout)
        if reuse is not None and old is not None:
            in_file_order = _reordered(rows, ids, old)
            info = reuse.partition_files[p].model_copy(
                update={"metadata": build.metadata_ref(p, in_file_order)}
            )
            part = None
            if probe_index is not None:
                part = _reused_index(build.layout, info, build.folder, build.template)
        else:
            info, part = build.write(p, rows)
        if probe_index is not None and part is not None:
            with build.lock:
                probe_index.merge_from(part, 0)
        return info

    return one


def _stored_dtype(dtype: str, template: Template) -> str:
    """The features' dtype: "auto" → float16 in a PCA space, float32 in the raw one."""
    if dtype == "auto":
        return "float16" if template.pretransform is not None else "float32"
    if dtype not in ("float32", "float16"):
        raise InvalidParameter(f"features dtype {dtype!r}: use auto, float32 or float16")
    return dtype


def _scoring_vectors(
    template: Template, vectors: np.ndarray, dtype: str, projected: bool = False
) -> np.ndarray:
    """Every vector in the scoring space, stored dtype (projected in blocks to bound memory;
    `projected` ones are only scaled to unit length again)."""
    n = len(vectors)
    out = np.empty((n, template.dim), dtype=dtype)
    for start in range(0, n, PROJECT_BLOCK):
        block = normalise(vectors[start : start + PROJECT_BLOCK])
        out[start : start + len(block)] = block if projected else template.project(block)
    return out


def _next_version(base: Manifest | None) -> str:
    """A new version id that sorts after the base's (ids made in the same second may not)."""
    version = new_version_id()
    while base is not None and version <= base.version:
        time.sleep(0.01)
        version = new_version_id()
    return version


def _train(x: np.ndarray, params: IndexParams, n: int) -> tuple[Template, np.ndarray]:
    """A template trained on a sample of `x`, and the sample's row numbers."""
    started = time.perf_counter()
    rows = sample_rows(n, max(params.train_size, params.nlist or 1))
    sample = normalise(x[rows])
    template = train_template(sample, params)
    log.info(
        "trained %s%s on %d vectors in %.1fs",
        f"PCA{params.pca_dim}," if params.pca_dim else "",
        params.factory,
        len(sample),
        time.perf_counter() - started,
    )
    return template, rows


def load_template(layout: IndexLayout, manifest: Manifest, folder: Path) -> Template:
    """A published version's trained template (downloaded into `folder`, verified)."""
    path = folder / TRAINED_FILE
    layout.store.download_file(layout.resolve(manifest.trained), path)
    verify_file(path, manifest.trained)
    return Template.read(str(path))


def _base_template(
    layout: IndexLayout, base: Manifest, folder: Path
) -> tuple[Template, FileRef, IndexParams]:
    """The base version's trained template, reused as is (no retraining, no re-upload)."""
    return load_template(layout, base, folder), base.trained, base.params


def _reused_index(
    layout: IndexLayout, info: PartitionInfo, folder: Path, template: Template
) -> Any:
    """A base partition's index, read for the recall probe (reused files are not rebuilt),
    with the template's quantizer in place of the file's empty placeholder."""
    path = folder / f"base-{info.partition}-{INDEX_FILE}"
    layout.store.download_file(layout.resolve(info.index), path)
    index = faiss.read_index(str(path))
    path.unlink()
    ivf: Any = faiss.extract_index_ivf(index)
    ivf.quantizer = template.quantizer
    ivf.own_fields = False  # the placeholder (a few bytes) is left behind
    return index


def _unchanged(
    base: Manifest, p: int, ids: np.ndarray, folder: Path, layout: IndexLayout
) -> np.ndarray | None:
    """The base's ids of partition p in its features.h5 order, when they are exactly `ids`
    (as a set); None when the partition changed."""
    info = base.partition_files[p]
    if info.count != len(ids):
        return None
    path = folder / f"base-{p}-{FEATURES_FILE}"
    if not path.exists():
        layout.store.download_file(layout.resolve(info.features), path)
    with h5py.File(path, "r") as h5:
        old = np.asarray(h5["ids"][:], dtype=np.int64)
    return old if np.array_equal(np.sort(old), np.sort(ids)) else None


def _reordered(rows: np.ndarray, ids: np.ndarray, old: np.ndarray) -> np.ndarray:
    """`rows` (whose ids are `ids`) in the order of `old`, the same ids as a base file has
    them: a reused partition's metadata rows must follow its features.h5."""
    by_id = np.argsort(ids)
    return rows[by_id[np.searchsorted(ids[by_id], old)]]


class _PartitionBuild:
    """What every partition of one build shares; `write` makes and uploads one partition."""

    def __init__(
        self,
        layout: IndexLayout,
        version: str,
        folder: Path,
        template: Template,
        ids: np.ndarray,
        y: np.ndarray,
        paths: Sequence[str],
        dtype: str,
    ) -> None:
        self.layout, self.version, self.folder = layout, version, folder
        self.template, self.ids, self.y, self.paths, self.dtype = template, ids, y, paths, dtype
        self.lock = threading.Lock()
        self.metadata: Metadata | None = None  # None: a version without metadata files
        self.base: Manifest | None = None  # metadata files equal to the base's are reused

    def metadata_ref(self, p: int, rows: np.ndarray) -> FileRef | None:
        """Partition p's metadata.arrow for `rows` (features.h5 order): the base's file when
        the bytes are the same (an unchanged sidecar), else a new one, uploaded."""
        if self.metadata is None:
            return None
        path = self.folder / f"{p}-{METADATA_FILE}"
        partition_table(path, self.ids[rows], [self.paths[r] for r in rows], self.metadata)
        old = self.base.partition_files[p].metadata if self.base is not None else None
        try:
            same_size = old is not None and old.size == path.stat().st_size
            if old is not None and same_size and sha256_file(path) == old.sha256:
                return old
            relative = self.layout.partition_relative(p, METADATA_FILE)
            return self.layout.upload(self.version, relative, path)
        finally:
            path.unlink()

    def manifest(
        self,
        model: ModelInfo,
        params: IndexParams,
        trained: FileRef,
        infos: list[PartitionInfo],
        parent: Manifest | None,
        found: RecallProbe | None,
        fit: Fit,
        source: str | None,
    ) -> Manifest:
        """The new version's manifest: what this build wrote and what it measured."""
        return Manifest(
            index_name=self.layout.name,
            version=self.version,
            created=datetime.now(UTC),
            model=model,
            params=params,
            partitions=len(infos),
            total=len(self.ids),
            dtype=self.dtype,  # type: ignore[arg-type]
            trained=trained,
            partition_files=infos,
            source=source,
            parent=parent.version if parent is not None else None,
            probe=found,
            metadata=dict(self.metadata.schema) if self.metadata is not None else None,
            centroid_fit=fit.centroid_fit,
        )

    def write(self, p: int, rows: np.ndarray) -> tuple[PartitionInfo, Any]:
        """Partition p's index.faiss and features.h5, uploaded; local copies removed.

        Returns the filled index too (its quantizer detached), for the recall probe.
        """
        index_path = self.folder / f"{p}-{INDEX_FILE}"
        features_path = self.folder / f"{p}-{FEATURES_FILE}"
        vectors = np.ascontiguousarray(self.y[rows], dtype=np.float32)
        index = fill_partition(self.template, self.ids[rows], vectors)
        write_partition(self.template, index, index_path)
        write_features(
            features_path, self.ids[rows], self.y[rows], [self.paths[r] for r in rows], self.dtype
        )
        layout, version = self.layout, self.version
        index_ref = layout.upload(version, layout.partition_relative(p, INDEX_FILE), index_path)
        features_ref = layout.upload(
            version, layout.partition_relative(p, FEATURES_FILE), features_path
        )
        index_path.unlink()
        features_path.unlink()
        info = PartitionInfo(
            partition=p,
            count=len(rows),
            index=index_ref,
            features=features_ref,
            metadata=self.metadata_ref(p, rows),
        )
        return info, index
