"""The flags of `simsearch up | scale | status | down | supervise | search`, nothing else.

Standard library only, like `indexer/parsers.py`: the CLI builds every parser on every
start, and each command names its runner (`handler`, `module:function`) for the CLI to
import when the command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

RUNNERS = "simsearch.local.commands"
DEFAULT_FOLDER = Path(".simsearch")
# Fewer than the indexer's 64 (`IndexerSettings`, which says why): a laptop's sample set
# in 64 partitions would make each local shard search dozens of near-empty files.
LOCAL_PARTITIONS = 16


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The local-cluster commands."""
    up = sub.add_parser("up", help="run a whole cluster locally and print its URL")
    up.add_argument(
        "--images",
        action="append",
        metavar="[NAME=]PATH",
        help="images to index as one collection, repeatable: the first unnamed is the "
        "default collection (--index), other unnamed ones are named after their folder "
        "(default: the bundled sample photos)",
    )
    up.add_argument(
        "--features",
        type=Path,
        help="serve an old service's features.h5 instead (vector search only: no embedder)",
    )
    up.add_argument("--store", help="object store for the index (default: .simsearch/store)")
    up.add_argument("--index", default="default", help="the default collection's name")
    up.add_argument("--shards", type=int, default=2)
    up.add_argument("--port", type=int, default=8000, help="router port; others follow it")
    up.add_argument("--partitions", type=int, default=LOCAL_PARTITIONS)
    up.add_argument("--replication", type=int, default=1, help="shards holding each partition")
    up.add_argument("--folder", type=Path, default=DEFAULT_FOLDER)
    up.set_defaults(handler=f"{RUNNERS}:run_up")
    scale = sub.add_parser(
        "scale", help="change the number of local shards (and restart any that died)"
    )
    scale.add_argument("shards", type=int)
    scale.add_argument("--timeout", type=float, default=300, help="seconds to wait for shards")
    scale.add_argument("--folder", type=Path, default=DEFAULT_FOLDER)
    scale.set_defaults(handler=f"{RUNNERS}:run_scale")
    for name, text in (("status", "show the local cluster"), ("down", "stop the local cluster")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--folder", type=Path, default=DEFAULT_FOLDER)
        cmd.set_defaults(handler=f"{RUNNERS}:run_{name}")
    supervise = sub.add_parser("supervise", help=argparse.SUPPRESS)  # started by `up`
    supervise.add_argument("--folder", type=Path, default=DEFAULT_FOLDER)
    supervise.set_defaults(handler=f"{RUNNERS}:run_supervise")
    search = sub.add_parser("search", help="search by an image file")
    search.add_argument("image", type=Path)
    search.add_argument("--url", default="http://127.0.0.1:8000")
    search.add_argument("-k", type=int, default=10)
    search.add_argument("--collection", help="a named collection (default: the router's own)")
    search.add_argument(
        "--filter", help='only matching images, as JSON: \'{"field": "label", "eq": "tulips"}\''
    )
    search.add_argument("--api-key", help="sent as X-API-Key (default: $SIMSEARCH_API_KEY)")
    search.set_defaults(handler=f"{RUNNERS}:run_search")
