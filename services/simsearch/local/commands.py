"""`simsearch up | scale | status | down` and `simsearch search`: the runners.

Their flags are in `parsers.py`; the CLI imports this module only when one of these
commands runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pydantic

from simsearch.client import ApiError, Client, ClientError, Filter, calls
from simsearch.common.errors import ConfigError
from simsearch.common.layout import IndexLayout
from simsearch.common.settings import ServiceSettings, load_settings
from simsearch.common.storage import open_store
from simsearch.local.cluster import (
    ClusterState,
    Process,
    alive,
    collections_of,
    spawn,
    stop,
    uri_of,
    wait_ready,
)
from simsearch.local.roles import embedder_env, indexer_args, router_env, shard_env
from simsearch.local.supervisor import locked, supervise

SAMPLES = Path(__file__).resolve().parents[3] / "samples" / "flowers" / "images"


def _write_topology(state: ClusterState, shards: list[Process]) -> None:
    _write_replicas(state, len(shards))
    _write_urls(state, shards)


def _write_replicas(state: ClusterState, replicas: int) -> None:
    """What every shard reads as the shard count (`kubectl scale` changes spec.replicas)."""
    _replace(Path(state.folder) / "topology.json", {"replicas": replicas})


def _write_urls(state: ClusterState, shards: list[Process]) -> None:
    """What the router reads as the shard URLs (EndpointSlices in Kubernetes)."""
    _replace(Path(state.folder) / "shards.json", {"shards": [p.url for p in shards]})


def _replace(path: Path, data: object) -> None:
    """Write JSON atomically: a reader polling the file never sees half of it."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _start_shard(state: ClusterState, ordinal: int) -> Process:
    env = shard_env(state.store, state.index, ordinal, Path(state.folder), state.replication)
    process = spawn(
        f"shard-{ordinal}", "shard", state.port + 10 + ordinal, env, Path(state.folder) / "logs"
    )
    state.processes.append(process)
    return process


def respawn(state: ClusterState, dead: Process) -> Process:
    """Start `dead`'s role again on its port with its environment (for the supervisor)."""
    folder = Path(state.folder)
    if dead.role.startswith("shard-"):
        ordinal = int(dead.role.split("-")[1])
        env = shard_env(state.store, state.index, ordinal, folder, state.replication)
        service = "shard"
    elif dead.role == "router":
        embedder = next((p for p in state.processes if p.role == "embedder"), None)
        embedder_url = embedder.url if embedder else ""
        env = router_env(state.store, state.router_images(), state.index, embedder_url, folder)
        service = "router"
    else:
        env, service = embedder_env(*state.image_roots()), "embedder"
    again = spawn(dead.role, service, dead.port, env, folder / "logs")
    again.restarts = dead.restarts + 1
    state.processes[state.processes.index(dead)] = again
    return again


def _start_supervisor(state: ClusterState) -> None:
    """`simsearch supervise` detached, its pid saved (under the lock it takes first)."""
    folder = Path(state.folder)
    with locked(folder):
        logs = folder / "logs"
        with (logs / "supervisor.log").open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "simsearch.cli", "supervise", "--folder", str(folder)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        state.supervisor_pid = proc.pid
        state.save()


def run_supervise(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    supervise(args.folder.resolve(), respawn)
    return 0


def run_up(args: argparse.Namespace) -> int:
    """Embedder → index builds (or features.h5 import) → shards → router; prints the URL."""
    folder = args.folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "state.json").exists() and any(
        alive(p.pid) for p in ClusterState.load(folder).processes
    ):
        raise ConfigError(f"a local cluster already runs from {folder}; `simsearch down` first")
    state = _new_state(args, folder)
    embedder_url = _publish_index(state, args, folder)
    shards = [_start_shard(state, i) for i in range(args.shards)]
    _write_topology(state, shards)
    env = router_env(state.store, state.router_images(), state.index, embedder_url, folder)
    router = spawn("router", "router", args.port, env, folder / "logs")
    state.processes.append(router)
    state.save()
    for shard in shards:
        wait_ready(shard, 300)
    wait_ready(router, 120)
    _wait_complete(router, 120, list(state.all_collections()))
    _start_supervisor(state)
    print(f"simsearch is up: {router.url}  (logs in {folder / 'logs'}; stop with `simsearch down`)")
    if len(state.all_collections()) > 1:
        print(f"collections: {', '.join(state.all_collections())} (default: {state.index})")
    return 0


def _new_state(args: argparse.Namespace, folder: Path) -> ClusterState:
    """The state of a cluster about to start, with its collections (checked first).

    The default collection is the one named `--index` ("default": the first unnamed
    `--images`), or, when every `--images` is named and none so, the first one.
    """
    if args.features is not None and args.images is not None:
        raise ConfigError("give --images (embed photos) or --features (import vectors), not both")
    if args.features is not None:
        collections = {args.index: ""}
    else:
        collections = collections_of(args.images or [str(SAMPLES)], args.index)
    index = args.index if args.index in collections else next(iter(collections))
    return ClusterState(
        str(folder),
        uri_of(args.store or str(folder / "store")),
        index,
        collections[index],
        args.port,
        replication=args.replication,
        collections=collections,
    )


def _publish_index(state: ClusterState, args: argparse.Namespace, folder: Path) -> str:
    """Index each collection through a started embedder (its URL is returned), or import
    `--features` (no embedder: "" is returned and image search answers 503).

    The builds run one after the other, in the order of the flags, each with its own
    progress bar and its own resume folder (`build/<name>`: a journal holds keys relative
    to one images root, so two collections must never share one).
    """
    if args.features is not None:
        imported = [
            "index", "import-h5", str(args.features), "--store", state.store,
            "--index", state.index, "--partitions", str(args.partitions),
        ]  # fmt: skip
        subprocess.run([sys.executable, "-m", "simsearch.cli", *imported], check=True)
        return ""
    env = embedder_env(*state.image_roots())
    embedder = spawn("embedder", "embedder", args.port + 1, env, folder / "logs")
    state.processes.append(embedder)
    state.save()
    print(f"starting the embedder ({embedder.log}) …", flush=True)
    wait_ready(embedder, 300)
    collections = state.all_collections()
    for name, images in collections.items():
        if len(collections) > 1:
            print(f"indexing collection {name!r} from {images} …", flush=True)
        workdir = folder / "build" / name
        build = indexer_args(images, state.store, name, embedder.url, args.partitions, workdir)
        subprocess.run([sys.executable, "-m", "simsearch.cli", *build], check=True)
    return embedder.url


def run_scale(args: argparse.Namespace) -> int:
    """Resize the shard set make-before-break, as the StatefulSet controller would resize it.

    Growing: the new processes start and `topology.json` changes at once; the old shards
    keep what they give away for their drain delay, longer than a new shard takes to
    load. Shrinking: `topology.json` changes first, and the leaving shards are stopped
    only once the survivors have loaded every partition of the live version — until then
    the leaving ones keep serving (they hold on to what they have while scaled away).
    Shards that died are started again, so `simsearch scale N` with the current N heals.
    """
    if args.shards < 1:
        raise ConfigError("a cluster needs at least one shard")
    with locked(args.folder.resolve()):  # the supervisor waits: no restart races with ours
        return _scale(args)


def _scale(args: argparse.Namespace) -> int:
    state = ClusterState.load(args.folder.resolve())
    shards = state.shards()
    for dead in [p for p in shards if not alive(p.pid)]:
        state.processes.remove(dead)
        ordinal = int(dead.role.split("-")[1])
        shards[shards.index(dead)] = _start_shard(state, ordinal)
        print(f"restarted {dead.role}")
    shards += [_start_shard(state, ordinal) for ordinal in range(len(shards), args.shards)]
    kept, leaving = shards[: args.shards], shards[args.shards :]
    _write_replicas(state, len(kept))
    if len(shards) == len(kept):
        _write_urls(state, kept)
    state.save()
    for shard in kept:
        wait_ready(shard, args.timeout)
    if leaving:
        _wait_covered(state, kept, args.timeout)
        _write_urls(state, kept)
        _wait_router_without(state, len(kept), args.timeout)
        for process in leaving:
            stop(process)
            state.processes.remove(process)
        state.save()
    print(f"{len(kept)} shards")
    return 0


def _wait_covered(state: ClusterState, shards: list[Process], timeout_s: float) -> None:
    """Wait until `shards` together have every partition of each collection's live version."""
    s3 = load_settings(ServiceSettings).s3_options()  # SIMSEARCH_S3_*, as `up` was given
    store = open_store(state.store, s3)
    layouts = [IndexLayout(store, name) for name in state.all_collections()]
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=5.0) as client:
        while time.monotonic() < deadline:
            if all(_covered(client, shards, layout) for layout in layouts):
                return
            time.sleep(0.2)
    raise ConfigError(
        f"the remaining {len(shards)} shards did not load every partition within "
        f"{timeout_s:.0f}s; the leaving shards were left running (see the shard logs)"
    )


def _covered(client: httpx.Client, shards: list[Process], layout: IndexLayout) -> bool:
    live = layout.current()
    return live is not None and _uncovered(client, shards, live, layout.name) == set()


def _wait_complete(router: Process, timeout_s: float, collections: list[str]) -> None:
    """Until the router answers from every partition of every collection.

    The router is ready as soon as it can answer at all (possibly partially: what a
    Service needs); `up` promises more, a cluster that answers completely, so it waits
    for the router's next poll to have seen every shard's loaded partitions: `/health`
    coverage 1.0 (the default collection) and, with several, each one complete in
    `GET /collections`.
    """
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=5.0) as client:
        while time.monotonic() < deadline:
            try:
                if _complete(client, router.url, collections):
                    return
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                pass
            time.sleep(0.2)
    raise ConfigError(
        f"the router did not see every partition of {', '.join(collections)} served within "
        f"{timeout_s:.0f}s (see the shard logs)"
    )


def _complete(client: httpx.Client, url: str, collections: list[str]) -> bool:
    if client.get(f"{url}/health").json().get("coverage") != 1.0:
        return False
    if len(collections) == 1:
        return True
    listed = client.get(f"{url}/collections").json()["collections"]
    complete = {c["name"] for c in listed if c["version"] and c["coverage"] == 1.0}
    return set(collections) <= complete


def _wait_router_without(state: ClusterState, shards: int, timeout_s: float) -> None:
    """Wait until the router lists only the remaining `shards` and they cover everything.

    Until the router has re-read the shard list and the survivors' holdings, it may still
    plan partitions on a leaving shard with no other holder it knows of; stopping that
    shard then would cost coverage.
    """
    router = next((p for p in state.processes if p.role == "router"), None)
    if router is None or not alive(router.pid):
        return
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=5.0) as client:
        while time.monotonic() < deadline:
            try:
                health = client.get(f"{router.url}/health").json()
            except (httpx.HTTPError, ValueError):
                health = {}
            listed = health.get("shards", {}).get("total")
            if listed == shards and health.get("status") == "healthy":
                return
            time.sleep(0.2)
    raise ConfigError(
        f"the router did not settle on {shards} shards within {timeout_s:.0f}s; the leaving "
        "shards were left running (see logs/router.log)"
    )


def _uncovered(
    client: httpx.Client, shards: list[Process], version: str, collection: str
) -> set[int] | None:
    """Partitions of `collection`'s `version` no shard has ready (None until it is known)."""
    ready: set[int] = set()
    total: int | None = None
    for shard in shards:
        try:
            info = client.get(f"{shard.url}/info").json()
        except (httpx.HTTPError, ValueError):
            return None
        for held in info["versions"]:
            if held["version"] == version and held.get("collection", "default") == collection:
                total = held["partitions"]
                ready.update(held["ready"])
    return None if total is None else set(range(total)) - ready


def run_status(args: argparse.Namespace) -> int:
    state = ClusterState.load(args.folder.resolve())
    for p in state.processes:
        up = "up" if alive(p.pid) else "DOWN"
        print(f"{p.role:10s} pid {p.pid:<8d} {p.url:28s} {up:5s} restarts {p.restarts}")
    pid = state.supervisor_pid
    watching = "up" if pid is not None and alive(pid) else "DOWN (crashed roles stay down)"
    print(f"{'supervisor':10s} pid {pid or 0:<8d} {'':28s} {watching}")
    for name, images in state.all_collections().items():
        default = " (default)" if name == state.index else ""
        print(f"collection {name}{default}: {images or 'imported features.h5'}")
    return 0


def run_down(args: argparse.Namespace) -> int:
    folder = args.folder.resolve()
    with locked(folder):
        state = ClusterState.load(folder)
        if state.supervisor_pid is not None:
            stop(Process("supervisor", state.supervisor_pid, 0, ""))  # first: no restarts
        for process in reversed(state.processes):
            stop(process)
        (folder / "state.json").unlink()
    print("stopped")
    return 0


def run_search(args: argparse.Namespace) -> int:
    """`simsearch search IMAGE`: the answer as JSON, or the router's error body (exit 1).

    Through `simsearch.client`, so a busy or restarting router (503, 429) is retried
    like any client would, and the error printed is the router's own body. A `--filter`
    that is not JSON or not a filter, a bad `--collection` name or an unreadable image
    exit 2 before any request: the same command would fail again. `--api-key` defaults
    to `SIMSEARCH_API_KEY`, so a key need not be on the command line (nor in `ps`).
    """
    try:
        search_filter = _search_filter(args.filter)
        collection = calls.collection_name(args.collection)
        image = args.image.read_bytes()
    except (ValueError, OSError) as err:
        print(f"simsearch search: {err}", file=sys.stderr)
        return 2
    api_key = args.api_key or os.environ.get("SIMSEARCH_API_KEY") or None
    try:
        with Client(args.url, api_key=api_key) as client:
            answer = client.search_image(
                image,
                filename=args.image.name,
                k=args.k,
                collection=collection,
                filter=search_filter,
            )
    except ApiError as err:
        body = {"status": "error", "error": err.code, "detail": err.detail}
        print(json.dumps({**body, "request_id": err.request_id}, indent=2))
        return 1
    except ClientError as err:
        print(f"simsearch search {args.url}: {err}", file=sys.stderr)
        return 1
    print(answer.model_dump_json(indent=2))
    return 0


def _search_filter(text: str | None) -> Filter | None:
    """`--filter`'s JSON as a `Filter`; `ValueError` with one readable line otherwise."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as err:
        raise ValueError(f"--filter is not JSON ({err}): {text[:200]}") from None
    try:
        return calls.filter_of(value)
    except pydantic.ValidationError as err:
        reasons = "; ".join(e["msg"] for e in err.errors(include_url=False)[:3])
        raise ValueError(f"--filter is not a filter: {reasons}") from None
