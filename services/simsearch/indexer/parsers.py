"""The flags of `simsearch index …` and `simsearch store …`, and nothing else.

The CLI builds its whole parser on every start, `simsearch serve router` included, so
this module imports only the standard library: each command names its runner as
`module:function` (`handler`), and the CLI imports that module (faiss, h5py, maybe
torch) only when the command runs. Flags default to None so that an unset flag leaves
the `SIMSEARCH_*` variable of the same setting in force (`indexer/settings.py`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

RUNNERS = "simsearch.indexer.commands"


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`simsearch index build|import-h5|gc|rollback` and `simsearch store make-bucket`."""
    index = sub.add_parser("index", help="build and manage indexes in object storage")
    verbs = index.add_subparsers(dest="verb", required=True)
    _add_build(verbs)
    _add_import_h5(verbs)
    gc = verbs.add_parser("gc", help="delete old versions, keeping the newest K")
    _add_location(gc)
    gc.add_argument("--keep", type=int, required=True)
    gc.set_defaults(handler=f"{RUNNERS}:run_gc")
    rb = verbs.add_parser("rollback", help="point CURRENT back at an older published version")
    rb.add_argument(
        "version", nargs="?", help="default: the newest published version older than the live one"
    )
    _add_location(rb)
    rb.set_defaults(handler=f"{RUNNERS}:run_rollback")
    store = sub.add_parser("store", help="prepare the object store")
    store_verbs = store.add_subparsers(dest="verb", required=True)
    mb = store_verbs.add_parser("make-bucket", help="create the bucket (or folder) if missing")
    mb.add_argument("uri", help="s3://bucket or file:///dir")
    mb.set_defaults(handler=f"{RUNNERS}:run_make_bucket")


def _add_location(parser: argparse.ArgumentParser) -> None:
    """Where the index is: every `index` verb takes these two."""
    parser.add_argument("--store", help="where the index lives, URI or path (SIMSEARCH_STORE)")
    parser.add_argument("--index", help="index name (SIMSEARCH_INDEX, default: default)")


def _add_build(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    b = verbs.add_parser("build", help="embed images and publish a new index version")
    b.add_argument("--images", help="s3://bucket/prefix, file:///dir, path (SIMSEARCH_IMAGES_ROOT)")
    _add_location(b)
    b.add_argument("--partitions", type=int, help="SIMSEARCH_PARTITIONS (default 64)")
    b.add_argument("--embedder", help="embedder URL (SIMSEARCH_EMBEDDER_URL); default: in-process")
    b.add_argument("--model", help="in-process model (SIMSEARCH_MODEL)")
    b.add_argument("--weights", help="in-process weights, file/URI/'random' (SIMSEARCH_WEIGHTS)")
    b.add_argument("--full", action="store_true", help="ignore the current version")
    b.add_argument("--retrain", action="store_true", help="train a new template")
    b.add_argument(
        "--recall-target",
        type=float,
        help="default nprobe = the smallest whose build-time recall@10 reaches this (0..1] "
        "(SIMSEARCH_RECALL_TARGET, default 0.95)",
    )
    b.add_argument("--workdir", type=Path, help="local folder for the resume journal")
    b.add_argument(
        "--metadata",
        metavar="PATH_OR_URI",
        help="metadata sidecar, .jsonl or .csv (SIMSEARCH_METADATA_SIDECAR; default: "
        "metadata.jsonl or metadata.csv at the images root)",
    )
    b.add_argument(
        "--metadata-tags",
        action="store_const",
        const=True,
        help="read S3 object tags as metadata fields (SIMSEARCH_METADATA_TAGS)",
    )
    b.add_argument("--no-progress", dest="progress", action="store_const", const=False)
    b.add_argument(
        "--allow-empty",
        action="store_true",
        help="no images yet is not an error: publish nothing and exit 0 (install hooks)",
    )
    b.set_defaults(handler=f"{RUNNERS}:run_build")


def _add_import_h5(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    imp = verbs.add_parser("import-h5", help="publish an old service's features.h5")
    imp.add_argument("file", type=Path)
    _add_location(imp)
    imp.add_argument("--partitions", type=int, help="SIMSEARCH_PARTITIONS (default 64)")
    # what made the vectors: a fact about the file, so no SIMSEARCH_MODEL (that is the
    # in-process model of `build`)
    imp.add_argument("--model", help="what made the vectors (default: the old service's resnet50)")
    imp.set_defaults(handler=f"{RUNNERS}:run_import_h5")
