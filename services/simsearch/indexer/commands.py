"""The `simsearch index …` commands: argument handling around build, import-h5, gc and
rollback."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path

from simsearch.common.errors import CorruptIndex, InvalidParameter, NoImages, NotFound
from simsearch.common.layout import IndexLayout
from simsearch.common.settings import ServiceSettings, load_settings
from simsearch.common.storage import open_store
from simsearch.indexer.build import BuildOptions, build
from simsearch.indexer.embedding import EmbedBackend, LocalBackend, RemoteBackend
from simsearch.indexer.import_h5 import OLD_SERVICE_MODEL, import_h5


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`simsearch index build|import-h5|gc|rollback` and `simsearch store make-bucket`."""
    index = sub.add_parser("index", help="build and manage indexes in object storage")
    verbs = index.add_subparsers(dest="verb", required=True)
    b = verbs.add_parser("build", help="embed images and publish a new index version")
    b.add_argument("--images", required=True, help="s3://bucket/prefix or file:///dir or a path")
    b.add_argument("--store", required=True, help="where the index lives (URI or path)")
    b.add_argument("--index", default="default")
    b.add_argument("--partitions", type=int, default=64)
    b.add_argument("--embedder", help="embedder URL; default: embed in this process")
    b.add_argument("--model", default="efficientnet-lite0", help="in-process model")
    b.add_argument("--weights", help="in-process model weights (file/URI/'random')")
    b.add_argument("--full", action="store_true", help="ignore the current version")
    b.add_argument("--retrain", action="store_true", help="train a new template")
    b.add_argument(
        "--recall-target",
        type=float,
        default=0.95,
        help="default nprobe = the smallest whose build-time recall@10 reaches this (0..1)",
    )
    b.add_argument("--workdir", type=Path, help="local folder for the resume journal")
    b.add_argument("--no-progress", action="store_true")
    b.add_argument(
        "--allow-empty",
        action="store_true",
        help="no images yet is not an error: publish nothing and exit 0 (install hooks)",
    )
    b.set_defaults(func=run_build)
    imp = verbs.add_parser("import-h5", help="publish an old service's features.h5")
    imp.add_argument("file", type=Path)
    imp.add_argument("--store", required=True)
    imp.add_argument("--index", default="default")
    imp.add_argument("--partitions", type=int, default=64)
    imp.add_argument("--model", default=OLD_SERVICE_MODEL, help="what made the vectors")
    imp.set_defaults(func=run_import_h5)
    gc = verbs.add_parser("gc", help="delete old versions, keeping the newest K")
    gc.add_argument("--store", required=True)
    gc.add_argument("--index", default="default")
    gc.add_argument("--keep", type=int, required=True)
    gc.set_defaults(func=run_gc)
    rb = verbs.add_parser("rollback", help="point CURRENT back at an older published version")
    rb.add_argument(
        "version", nargs="?", help="default: the newest published version older than the live one"
    )
    rb.add_argument("--store", required=True)
    rb.add_argument("--index", default="default")
    rb.set_defaults(func=run_rollback)
    store = sub.add_parser("store", help="prepare the object store")
    store_verbs = store.add_subparsers(dest="verb", required=True)
    mb = store_verbs.add_parser("make-bucket", help="create the bucket (or folder) if missing")
    mb.add_argument("uri", help="s3://bucket or file:///dir")
    mb.set_defaults(func=run_make_bucket)


def run_make_bucket(args: argparse.Namespace) -> int:
    """Create the store's bucket (S3, with the SIMSEARCH_S3_* settings) or folder."""
    store = open_store(args.uri, load_settings(ServiceSettings).s3_options())
    created = store.ensure_root()
    print(f"{store.uri}: {'created' if created else 'already exists'}")
    return 0


def _layout(store: str, index: str) -> IndexLayout:
    s3 = load_settings(ServiceSettings).s3_options()
    return IndexLayout(open_store(store, s3), index)


def run_build(args: argparse.Namespace) -> int:
    """Build (incrementally unless --full) and print the report as JSON."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    s3 = load_settings(ServiceSettings).s3_options()
    images = open_store(args.images, s3)
    backend: EmbedBackend = (
        RemoteBackend(args.embedder, images)
        if args.embedder
        else LocalBackend(images, args.model, args.weights)
    )
    options = BuildOptions(
        partitions=args.partitions,
        full=args.full,
        retrain=args.retrain,
        recall_target=args.recall_target,
        workdir=args.workdir,
        progress=not args.no_progress,
    )
    try:
        report = build(images, _layout(args.store, args.index), backend, options)
    except NoImages as err:
        print(f"simsearch index build: {err.reason}", file=sys.stderr)
        return 0 if args.allow_empty else 1
    print(json.dumps(asdict(report), indent=2, default=str))
    return 0


def run_import_h5(args: argparse.Namespace) -> int:
    manifest = import_h5(args.file, _layout(args.store, args.index), args.model, args.partitions)
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
    deleted = _layout(args.store, args.index).gc(args.keep)
    print(json.dumps({"deleted": deleted}))
    return 0


def run_rollback(args: argparse.Namespace) -> int:
    """Flip CURRENT back and print {"previous", "current"}; a refusal exits 1 with the reason.

    A refusal is an operator's mistake (nothing older, a typo in the id, a damaged
    version), not a crash, so it gets one line on stderr instead of a traceback.
    """
    try:
        layout = _layout(args.store, args.index)
        previous = layout.current()
        current = layout.rollback(args.version)
    except (NotFound, CorruptIndex, InvalidParameter) as err:
        print(f"simsearch index rollback: {err.reason}", file=sys.stderr)
        return 1
    print(json.dumps({"previous": previous, "current": current}))
    return 0
