"""`simsearch index build`: scan → embed (resumable) → write partitions → publish.

Stages and what each one guarantees:
1. scan: the image keys under the images URI, and every image's metadata (built-in
   fields, the sidecar, S3 tags: `metadata.py`); a bad sidecar stops the build here.
2. base: with a published index (and not `--full`), its vectors are reused, so only new
   keys are embedded and keys that disappeared from the bucket disappear from the index.
   A PCA version stores them projected (its scoring space): the new vectors are projected
   with its template to join them, and a new template (`--retrain`, another partition
   count) is refused before anything is embedded: it needs `--full`.
3. embed: in chunks, each chunk journaled on local disk as it finishes; a build that dies
   and is started again embeds only what is not in the journal. A progress bar shows rate
   and ETA.
4. write + publish (`writer.write_index`): one template (the base's unless `--retrain`),
   every partition a copy of it, with its metadata table; `CURRENT` flips last. A build
   that embeds nothing new and whose metadata files would be byte-identical to the
   base's publishes nothing (`unchanged`).
5. drift (`drift.py`, measured inside the write): the manifest's `centroid_fit`; with a
   reused template, the new vectors against the template's training figure, and the
   advice to retrain when they lie too far (`report.advice`).
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from simsearch.common.errors import ConfigError, NoImages, NotFound
from simsearch.common.features import open_features
from simsearch.common.ids import key_ids
from simsearch.common.layout import IndexLayout
from simsearch.common.manifest import Manifest, sha256_file
from simsearch.common.storage import ObjectInfo, ObjectStore, S3Options
from simsearch.indexer.drift import Fit, advice
from simsearch.indexer.embedding import EmbedBackend
from simsearch.indexer.journal import Journal
from simsearch.indexer.metadata import Metadata, collect_metadata, partition_table, read_sidecar
from simsearch.indexer.scan import scan_images
from simsearch.indexer.settings import (
    DEFAULT_DRIFT_ADVICE_RATIO,
    DEFAULT_EMBED_CHUNK,
    DEFAULT_PARTITIONS,
    DEFAULT_RECALL_TARGET,
)
from simsearch.indexer.writer import load_template, normalise, write_index

log = logging.getLogger(__name__)


@dataclass
class BuildReport:
    """What a build did, printed at the end and returned to callers (tests, local mode)."""

    version: str | None = None
    scanned: int = 0
    embedded: int = 0
    reused: int = 0
    resumed: int = 0
    deleted: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    unchanged: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)  # schema, sidecar, ignored rows
    drift: dict[str, Any] = field(default_factory=dict)  # centroid fit figures (`drift.Fit`)
    advice: str | None = None  # the one line advising a new template (None: no drift)


@dataclass
class BuildOptions:
    """Knobs of one build (from `IndexerSettings` and the command's flags)."""

    partitions: int = DEFAULT_PARTITIONS
    chunk: int = DEFAULT_EMBED_CHUNK
    full: bool = False
    retrain: bool = False
    recall_target: float = DEFAULT_RECALL_TARGET  # the recall probe's target for the default nprobe
    workdir: Path | None = None
    progress: bool = True
    metadata_sidecar: str | None = None  # a path or URI; None: metadata.jsonl/.csv at the root
    metadata_tags: bool = False  # read each image's S3 object tags as string fields
    s3: S3Options | None = None  # for a sidecar named by an s3:// URI
    drift_advice_ratio: float = DEFAULT_DRIFT_ADVICE_RATIO  # new/trained distance: advise


@dataclass
class _Base:
    """What a build takes from the published version it starts from."""

    manifest: Manifest
    vectors: dict[str, np.ndarray]  # key → vector
    rows: list[tuple[np.ndarray, list[str]]]  # per partition: ids and keys, file order


def existing_vectors(layout: IndexLayout, manifest: Manifest, folder: Path) -> _Base:
    """key → vector of every image in a published version (from its features.h5 files:
    in its scoring space, i.e. projected for a PCA version), and each partition's ids and
    keys in file order (to compare metadata files)."""
    out: dict[str, np.ndarray] = {}
    rows: list[tuple[np.ndarray, list[str]]] = []
    for info in manifest.partition_files:
        if info.count == 0:
            rows.append((np.zeros(0, np.int64), []))
            continue
        path = folder / f"base-{info.partition}.h5"
        layout.store.download_file(layout.resolve(info.features), path)
        features = open_features(path)
        keys = features.paths(np.arange(len(features.ids)))
        vectors = np.asarray(features.vectors, dtype=np.float32)
        out.update(zip(keys, vectors, strict=True))
        rows.append((np.asarray(features.ids, np.int64), list(keys)))
        path.unlink()
    return _Base(manifest, out, rows)


def same_metadata(base: _Base, metadata: Metadata, folder: Path) -> bool:
    """Whether every partition's metadata.arrow would be byte-identical to the base's."""
    if base.manifest.metadata != metadata.schema:
        return False
    for info, (ids, keys) in zip(base.manifest.partition_files, base.rows, strict=True):
        if info.metadata is None:
            return False
        path = folder / f"metadata-{info.partition}.arrow"
        partition_table(path, ids, keys, metadata)
        same = path.stat().st_size == info.metadata.size and sha256_file(path) == (
            info.metadata.sha256
        )
        path.unlink()
        if not same:
            return False
    return True


def _advance(bar: tqdm[Any], count: int) -> None:
    bar.update(count)


def _base(layout: IndexLayout, options: BuildOptions) -> Manifest | None:
    if options.full:
        return None
    try:
        return layout.load_manifest()
    except NotFound:
        return None


def _embed(
    backend: EmbedBackend,
    keys: list[str],
    journal: Journal,
    options: BuildOptions,
    report: BuildReport,
) -> None:
    """Embed `keys` chunk by chunk, journaling each chunk, with a progress bar."""
    bar = tqdm(
        total=len(keys),
        unit="img",
        desc="embedding",
        disable=not options.progress,
        file=sys.stderr,
        smoothing=0.1,
    )
    for start in range(0, len(keys), options.chunk):
        chunk = keys[start : start + options.chunk]
        ok, vectors, failed = backend.embed(chunk)
        journal.append(ok, vectors, failed)
        report.embedded += len(ok)
        report.failed.update(failed)
        bar.update(len(chunk))
    bar.close()


def build(
    images: ObjectStore,
    layout: IndexLayout,
    backend: EmbedBackend,
    options: BuildOptions | None = None,
) -> BuildReport:
    """Run a (possibly incremental, possibly resumed) build and publish it."""
    options = options or BuildOptions()
    started = time.perf_counter()
    report = BuildReport()
    scanned = _scan(images, report)
    sidecar = read_sidecar(images, options.metadata_sidecar, options.s3)
    metadata = collect_metadata(images, scanned, sidecar, options.metadata_tags, options.progress)
    report.metadata = metadata.summary()
    manifest = _base(layout, options)
    _check_same_model(manifest, backend)
    _check_template_reuse(manifest, options)
    workdir = options.workdir or Path(tempfile.gettempdir()) / "simsearch-build" / layout.name
    journal = Journal(workdir / "journal")
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        base = existing_vectors(layout, manifest, Path(tmp)) if manifest is not None else None
    known = base.vectors if base is not None else {}
    keys = [info.key for info in scanned]
    todo = _todo(keys, known, journal, report)
    _embed(backend, todo, journal, options, report)  # refused images are retried every build
    if base is not None and _nothing_changed(base, metadata, report, options, workdir):
        journal.clear()
        report.unchanged, report.version = True, base.manifest.version
        return report
    done = journal.load()
    report.failed.update(journal.failed())
    keys = [k for k in keys if k in known or k in done]
    ctx = _Context(images, backend, manifest, workdir, options, metadata)
    published = _write(layout, _version_vectors(layout, keys, known, done, ctx), ctx, report)
    journal.clear()
    report.version = published.version
    report.seconds = time.perf_counter() - started
    return report


def _nothing_changed(
    base: _Base, metadata: Metadata, report: BuildReport, options: BuildOptions, workdir: Path
) -> bool:
    """No vector to add or drop, no retraining asked, and the same metadata files: a new
    version would be the base again (so none is published)."""
    if report.embedded or report.resumed or report.deleted or options.retrain:
        return False
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        return same_metadata(base, metadata, Path(tmp))


def _scan(images: ObjectStore, report: BuildReport) -> list[ObjectInfo]:
    """Every image under `images`; none at all is `NoImages` (nothing to build)."""
    scanned = scan_images(images)
    report.scanned = len(scanned)
    if not scanned:
        raise NoImages(f"no images under {images.uri}")
    return scanned


def _check_same_model(base: Manifest | None, backend: EmbedBackend) -> None:
    """Vectors of two models are not comparable: an incremental build must keep the model."""
    if base is not None and base.model.name != backend.model.name:
        raise ConfigError(
            f"the index was built with {base.model.name}, the embedder runs "
            f"{backend.model.name}: rebuild everything with --full"
        )


def _projected(base: Manifest | None) -> bool:
    """Whether `base` keeps its vectors only projected: a PCA version's features.h5 holds
    them in its scoring space (e.g. 256-d float16), not as the model made them."""
    return base is not None and base.params.pca_dim is not None


def _check_template_reuse(base: Manifest | None, options: BuildOptions) -> None:
    """Before anything is embedded: a new template cannot be trained from a PCA version's
    projected vectors, so `--retrain` (or a new partition count, which retrains) needs
    every image embedded again (`--full`)."""
    if base is None or not _projected(base):
        return
    if not options.retrain and options.partitions == base.partitions:
        return
    why = "--retrain"
    if not options.retrain:
        why = f"{options.partitions} partitions, not {base.partitions}"
    raise ConfigError(
        f"version {base.version} keeps its vectors only in its PCA{base.params.pca_dim} "
        f"scoring space, so a new template ({why}) cannot be trained from them: rebuild "
        "with --full, which embeds every image again"
    )


@dataclass
class _Rows:
    """The new version's rows: keys, their vectors, and which rows this build embedded."""

    keys: list[str]
    vectors: np.ndarray
    space: str  # "raw" (as the model made them) or "index" (the base's scoring space)
    fresh: np.ndarray  # row numbers of the vectors embedded by this build


def _version_vectors(
    layout: IndexLayout,
    keys: list[str],
    known: dict[str, np.ndarray],
    done: dict[str, np.ndarray],
    ctx: _Context,
) -> _Rows:
    """This version's vectors, rows as `keys`: the base's (`known`) and this build's.

    Raw unless the base is a PCA version: its vectors are known only projected, so the
    new ones are projected with its template to join them, and that template is reused
    (`_check_template_reuse`).
    """
    fresh = np.flatnonzero([k not in known for k in keys])
    if ctx.base is None or not _projected(ctx.base):
        vectors = np.stack([known[k] if k in known else done[k] for k in keys])
        return _Rows(keys, vectors, "raw", fresh)
    new = [keys[r] for r in fresh]
    projected: dict[str, np.ndarray] = {}
    if new:
        with tempfile.TemporaryDirectory(dir=ctx.workdir) as tmp:
            template = load_template(layout, ctx.base, Path(tmp))
        raw = normalise(np.stack([done[k] for k in new]))
        projected = dict(zip(new, template.project(raw), strict=True))
    vectors = np.stack([known[k] if k in known else projected[k] for k in keys])
    return _Rows(keys, vectors, "index", fresh)


def _todo(
    scanned: list[str], known: dict[str, np.ndarray], journal: Journal, report: BuildReport
) -> list[str]:
    """The keys still to embed: neither in the base version nor in the resume journal
    (nor refused by the embedder this run); counts what is reused, resumed and deleted."""
    done = journal.load()
    wanted = set(scanned)
    report.reused = len(wanted & known.keys())
    report.deleted = len(known.keys() - wanted)
    report.resumed = len((wanted - known.keys()) & done.keys())
    failed = journal.failed()
    return [k for k in scanned if k not in known and k not in done and k not in failed]


@dataclass
class _Context:
    """What the write step needs besides the vectors (one build's fixed inputs)."""

    images: ObjectStore
    backend: EmbedBackend
    base: Manifest | None
    workdir: Path
    options: BuildOptions
    metadata: Metadata


def _write(layout: IndexLayout, rows: _Rows, ctx: _Context, report: BuildReport) -> Manifest:
    """Train (or reuse) the template, write every partition and publish, with a bar; the
    drift figures (and any `--retrain` advice) go into `report`."""
    options, full = ctx.options, _projected(ctx.base)
    bar: tqdm[Any] = tqdm(
        total=options.partitions,
        unit="part",
        desc="writing",
        file=sys.stderr,
        disable=not options.progress,
    )
    try:
        return write_index(
            layout,
            key_ids(rows.keys),
            rows.vectors,
            rows.keys,
            ctx.backend.model,
            partitions=options.partitions,
            source=ctx.images.uri,
            progress=lambda count: _advance(bar, count),
            workdir=ctx.workdir,
            base=ctx.base,
            retrain=options.retrain,
            recall_target=options.recall_target,
            metadata=ctx.metadata,
            fresh=rows.fresh,
            on_fit=lambda fit: _drifted(fit, options.drift_advice_ratio, full, report),
            space=rows.space,
        )
    finally:
        bar.close()


def _drifted(fit: Fit, threshold: float, full: bool, report: BuildReport) -> None:
    """Record the centroid fit, and advise a new template when the new vectors drifted
    (`--full` for a PCA version, see `_check_template_reuse`); logged with the figures,
    and `simsearch index build` prints the line on stderr."""
    report.drift = fit.summary()
    report.advice = advice(fit, threshold, full)
    if report.advice is not None:
        log.warning(
            "drift: the %d new vectors' mean centroid distance is %.4f, the template's "
            "training sample's %.4f: ratio %.3f > %.2f (SIMSEARCH_DRIFT_ADVICE_RATIO)",
            fit.fresh_sample,
            fit.fresh_mean,
            fit.centroid_fit.trained if fit.centroid_fit else 0.0,
            fit.ratio,
            threshold,
        )
