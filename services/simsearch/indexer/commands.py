"""The `simsearch index …` runners: settings → build, import-h5, gc, rollback.

Their flags are in `parsers.py` (standard library only); the CLI imports this module,
and with it faiss and h5py, only when one of these commands runs. Each runner loads
`IndexerSettings` with its flags as overrides, so a flag wins over its variable.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict

from simsearch.common.errors import CorruptIndex, InvalidParameter, NoImages, NotFound
from simsearch.common.layout import IndexLayout
from simsearch.common.settings import load_settings
from simsearch.common.storage import ObjectStore, open_store
from simsearch.indexer.build import BuildOptions, build
from simsearch.indexer.embedding import EmbedBackend, LocalBackend, RemoteBackend
from simsearch.indexer.import_h5 import OLD_SERVICE_MODEL, import_h5
from simsearch.indexer.settings import IndexerSettings


def run_make_bucket(args: argparse.Namespace) -> int:
    """Create the store's bucket (S3, with the SIMSEARCH_S3_* settings) or folder."""
    store = open_store(args.uri, load_settings(IndexerSettings).s3_options())
    created = store.ensure_root()
    print(f"{store.uri}: {'created' if created else 'already exists'}")
    return 0


def settings_of(args: argparse.Namespace) -> IndexerSettings:
    """`IndexerSettings` from the environment, the flags this command has given winning."""
    flags = {
        "images_root": getattr(args, "images", None),
        "store": getattr(args, "store", None),
        "index": getattr(args, "index", None),
        "partitions": getattr(args, "partitions", None),
        "embedder_url": getattr(args, "embedder", None),
        "model": getattr(args, "model", None) if args.verb == "build" else None,
        "weights": getattr(args, "weights", None),
        "recall_target": getattr(args, "recall_target", None),
        "workdir": getattr(args, "workdir", None),
        "progress": getattr(args, "progress", None),
        "metadata_sidecar": getattr(args, "metadata", None),
        "metadata_tags": getattr(args, "metadata_tags", None),
    }
    return load_settings(IndexerSettings, **flags)


def _layout(settings: IndexerSettings) -> IndexLayout:
    store = open_store(settings.required("store", "--store"), settings.s3_options())
    return IndexLayout(store, settings.index)


def _backend(settings: IndexerSettings, images: ObjectStore) -> EmbedBackend:
    """The embedder service when one is named, else the model in this process."""
    if settings.embedder_url:
        return RemoteBackend(settings.embedder_url, images)
    return LocalBackend(images, settings.model, settings.weights)


def run_build(args: argparse.Namespace) -> int:
    """Build (incrementally unless --full) and print the report as JSON (and any
    `--retrain` advice on stderr, one line)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = settings_of(args)
    layout = _layout(settings)
    images = open_store(settings.required("images_root", "--images"), settings.s3_options())
    options = BuildOptions(
        partitions=settings.partitions,
        chunk=settings.embed_chunk,
        full=args.full,
        retrain=args.retrain,
        recall_target=settings.recall_target,
        workdir=settings.workdir,
        progress=settings.progress,
        metadata_sidecar=settings.metadata_sidecar,
        metadata_tags=settings.metadata_tags,
        s3=settings.s3_options(),
        drift_advice_ratio=settings.drift_advice_ratio,
    )
    try:
        report = build(images, layout, _backend(settings, images), options)
    except NoImages as err:
        print(f"simsearch index build: {err.reason}", file=sys.stderr)
        return 0 if args.allow_empty else 1
    print(json.dumps(asdict(report), indent=2, default=str))
    if report.advice is not None:  # advice, not a failure: the version is published
        print(report.advice, file=sys.stderr)
    return 0


def run_import_h5(args: argparse.Namespace) -> int:
    """Publish an old `features.h5` and print its version, size, dim and factory."""
    settings = settings_of(args)
    model = args.model or OLD_SERVICE_MODEL
    manifest = import_h5(args.file, _layout(settings), model, settings.partitions)
    print(
        json.dumps(
            {
                "version": manifest.version,
                "total": manifest.total,
                "dim": manifest.model.dim,
                "factory": manifest.params.factory,
            }
        )
    )
    return 0


def run_gc(args: argparse.Namespace) -> int:
    deleted = _layout(settings_of(args)).gc(args.keep)
    print(json.dumps({"deleted": deleted}))
    return 0


def run_rollback(args: argparse.Namespace) -> int:
    """Flip CURRENT back and print {"previous", "current"}; a refusal exits 1 with the reason.

    A refusal is an operator's mistake (nothing older, a typo in the id, a damaged
    version), not a crash, so it gets one line on stderr instead of a traceback.
    """
    try:
        layout = _layout(settings_of(args))
        previous = layout.current()
        current = layout.rollback(args.version)
    except (NotFound, CorruptIndex, InvalidParameter) as err:
        print(f"simsearch index rollback: {err.reason}", file=sys.stderr)
        return 1
    print(json.dumps({"previous": previous, "current": current}))
    return 0
