"""`simsearch up | scale | status | down` and `simsearch search`: argument handling."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import httpx

from simsearch.common.errors import ConfigError
from simsearch.local.cluster import ClusterState, Process, alive, spawn, stop, wait_ready
from simsearch.local.roles import embedder_env, indexer_args, router_env, shard_env

DEFAULT_FOLDER = Path(".simsearch")
SAMPLES = Path(__file__).resolve().parents[3] / "samples" / "flowers" / "images"


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The local-cluster commands."""
    up = sub.add_parser("up", help="run a whole cluster locally and print its URL")
    up.add_argument("--images", help="images to index (default: the bundled sample photos)")
    up.add_argument("--store", help="object store for the index (default: .simsearch/store)")
    up.add_argument("--index", default="default")
    up.add_argument("--shards", type=int, default=2)
    up.add_argument("--port", type=int, default=8000, help="router port; others follow it")
    up.add_argument("--partitions", type=int, default=16)
    up.add_argument("--folder", type=Path, default=DEFAULT_FOLDER)
    up.set_defaults(func=run_up)
    scale = sub.add_parser("scale", help="change the number of local shards")
    scale.add_argument("shards", type=int)
    scale.add_argument("--folder", type=Path, default=DEFAULT_FOLDER)
    scale.set_defaults(func=run_scale)
    for name, func, text in (
        ("status", run_status, "show the local cluster"),
        ("down", run_down, "stop the local cluster"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--folder", type=Path, default=DEFAULT_FOLDER)
        cmd.set_defaults(func=func)
    search = sub.add_parser("search", help="search by an image file")
    search.add_argument("image", type=Path)
    search.add_argument("--url", default="http://127.0.0.1:8000")
    search.add_argument("-k", type=int, default=10)
    search.set_defaults(func=run_search)


def _uri(value: str | None, default: Path) -> str:
    return value if value and "://" in value else str(Path(value or default).resolve())


def _write_topology(state: ClusterState, shards: list[Process]) -> None:
    folder = Path(state.folder)
    (folder / "topology.json").write_text(json.dumps({"replicas": len(shards)}))
    (folder / "shards.json").write_text(json.dumps({"shards": [p.url for p in shards]}))


def _start_shard(state: ClusterState, ordinal: int) -> Process:
    process = spawn(
        f"shard-{ordinal}",
        "shard",
        state.port + 10 + ordinal,
        shard_env(state.store, state.index, ordinal, Path(state.folder)),
        Path(state.folder) / "logs",
    )
    state.processes.append(process)
    return process


def run_up(args: argparse.Namespace) -> int:
    """Embedder → index build → shards → router; prints the router's URL."""
    folder = args.folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "state.json").exists() and any(
        alive(p.pid) for p in ClusterState.load(folder).processes
    ):
        raise ConfigError(f"a local cluster already runs from {folder}; `simsearch down` first")
    images = _uri(args.images, SAMPLES)
    state = ClusterState(
        str(folder), _uri(args.store, folder / "store"), args.index, images, args.port
    )
    logs = folder / "logs"
    embedder = spawn("embedder", "embedder", args.port + 1, embedder_env(), logs)
    state.processes.append(embedder)
    state.save()
    print(f"starting the embedder ({embedder.log}) …", flush=True)
    wait_ready(embedder, 300)
    build = indexer_args(
        images, state.store, args.index, embedder.url, args.partitions, folder / "build"
    )
    subprocess.run([sys.executable, "-m", "simsearch.cli", *build], check=True)
    shards = [_start_shard(state, i) for i in range(args.shards)]
    _write_topology(state, shards)
    env = router_env(state.store, images, args.index, embedder.url, folder)
    router = spawn("router", "router", args.port, env, logs)
    state.processes.append(router)
    state.save()
    for shard in shards:
        wait_ready(shard, 300)
    wait_ready(router, 120)
    print(f"simsearch is up: {router.url}  (logs in {logs}; stop with `simsearch down`)")
    return 0


def run_scale(args: argparse.Namespace) -> int:
    """Start or stop shards and rewrite the topology the shards and the router read."""
    state = ClusterState.load(args.folder.resolve())
    shards = state.shards()
    if args.shards < 1:
        raise ConfigError("a cluster needs at least one shard")
    for ordinal in range(len(shards), args.shards):
        shards.append(_start_shard(state, ordinal))
    removed = shards[args.shards :]
    shards = shards[: args.shards]
    _write_topology(state, shards)
    for process in removed:
        stop(process)
        state.processes.remove(process)
    state.save()
    for shard in shards:
        wait_ready(shard, 300)
    print(f"{len(shards)} shards")
    return 0


def run_status(args: argparse.Namespace) -> int:
    state = ClusterState.load(args.folder.resolve())
    for p in state.processes:
        print(f"{p.role:10s} pid {p.pid:<8d} {p.url:28s} {'up' if alive(p.pid) else 'DOWN'}")
    return 0


def run_down(args: argparse.Namespace) -> int:
    folder = args.folder.resolve()
    state = ClusterState.load(folder)
    for process in reversed(state.processes):
        stop(process)
    (folder / "state.json").unlink()
    print("stopped")
    return 0


def run_search(args: argparse.Namespace) -> int:
    with args.image.open("rb") as handle:
        response = httpx.post(
            f"{args.url}/search/image",
            params={"k": args.k},
            files={"file": (args.image.name, handle)},
            timeout=60,
        )
    print(json.dumps(response.json(), indent=2))
    return 0 if response.status_code == 200 else 1
