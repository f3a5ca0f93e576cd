"""A local cluster's processes and state file: spawn, wait for readiness, stop.

The services are the ones the Helm chart runs, started as `simsearch serve ROLE` child
processes on loopback with the `file` topology and discovery sources: `topology.json`
(how many shards exist, read by every shard) and `shards.json` (their URLs, read by the
router) in the state folder. `scale` rewrites both, exactly as a StatefulSet resize
changes what the Kubernetes sources report. Every process logs to `logs/ROLE.log`.

The state file also records the collections `up` indexed (`collections_of` reads them
from the `--images [NAME=]PATH` flags), so `status`, `scale` and the supervisor know them.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from simsearch.common.errors import ConfigError
from simsearch.common.manifest import is_index_name
from simsearch.local.roles import SERVE_ARGS

STATE_FILE = "state.json"
# `NAME=PATH`: a name is what comes before the first "=", if it holds no "/", "\\" or ":"
# (so `s3://b/x=y` and `photos/a=b` stay paths, and `./a=b` is the folder "a=b").
_NAMED = re.compile(r"^([^=/\\:]+)=(.+)$")


@dataclass
class Process:
    """One running service."""

    role: str
    pid: int
    port: int
    log: str
    restarts: int = 0  # by the supervisor (`simsearch status` shows them)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class ClusterState:
    """What `up` started, so that `scale`, `status` and `down` can find it.

    `index` names the default collection (the old routes' one) and `images` its images;
    `collections` maps every collection's name to its images root, in the order `up`
    built them ("" for an imported features.h5). A state file written before collections
    has none: `all_collections` then reads it as the one index it was.
    """

    folder: str
    store: str
    index: str
    images: str
    port: int
    replication: int = 1
    processes: list[Process] = field(default_factory=list)
    supervisor_pid: int | None = None  # `simsearch supervise` (local/supervisor.py)
    collections: dict[str, str] = field(default_factory=dict)

    def all_collections(self) -> dict[str, str]:
        """Name → images root of every collection (the default one included)."""
        return dict(self.collections) or {self.index: self.images}

    def image_roots(self) -> list[str]:
        """Every images root, once each: what the embedder may read."""
        return list(dict.fromkeys(r for r in self.all_collections().values() if r))

    def router_images(self) -> str:
        """`SIMSEARCH_IMAGES_ROOT` of the router: only with one collection.

        With several, each collection's images are where its manifest's `source` says
        (the router reads it from the store), since one root cannot serve them all.
        """
        return self.images if len(self.all_collections()) == 1 else ""

    def save(self) -> None:
        path = Path(self.folder) / STATE_FILE
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, folder: Path) -> ClusterState:
        path = folder / STATE_FILE
        if not path.exists():
            raise ConfigError(f"no local cluster in {folder} (start one with `simsearch up`)")
        data = json.loads(path.read_text())
        data["processes"] = [Process(**p) for p in data["processes"]]
        return cls(**data)

    def shards(self) -> list[Process]:
        return sorted(
            (p for p in self.processes if p.role.startswith("shard-")),
            key=lambda p: int(p.role.split("-")[1]),
        )


def uri_of(path: str) -> str:
    """A URI as given, a local path made absolute (what every role is handed)."""
    return path if "://" in path else str(Path(path).resolve())


def collections_of(specs: list[str], default: str) -> dict[str, str]:
    """Collection name → images URI from the `--images [NAME=]PATH` flags, in their order.

    The first unnamed one is the default collection (named `default`, the `--index` name
    the router and the shards are given); other unnamed ones are named after their folder,
    lower-cased, with every character an index name may not hold turned into "-".
    """
    found: dict[str, str] = {}
    unnamed = 0
    for spec in specs:
        named = _NAMED.match(spec)
        path = named.group(2) if named else spec
        if named:
            name = named.group(1)
            if not is_index_name(name):
                raise ConfigError(
                    f"--images {spec}: {name!r} is no collection name "
                    "(lower-case letters, digits, '-' and '_', at most 63, not starting with '-')"
                )
        else:
            name = default if unnamed == 0 else _folder_name(path)
            unnamed += 1
        uri = uri_of(path)
        if name in found:
            raise ConfigError(
                f"two --images are collection {name!r}: {found[name]} and {uri}; "
                "name one of them with --images NAME=PATH"
            )
        found[name] = uri
    return found


def _folder_name(path: str) -> str:
    """The collection name of an unnamed `--images` after the first: its folder's name."""
    folder = path.rstrip("/").rsplit("/", 1)[-1] if "://" in path else Path(path).resolve().name
    name = re.sub(r"[^a-z0-9_-]", "-", folder.lower())
    if not is_index_name(name):
        raise ConfigError(
            f"--images {path}: its folder name {folder!r} makes no collection name; "
            f"name it with --images NAME={path}"
        )
    return name


def alive(pid: int) -> bool:
    """Whether a process still runs (reaping it first if it is our exited child)."""
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False
    except ChildProcessError:
        pass  # not our child: `simsearch down` from another shell
    try:
        os.kill(pid, 0)  # signal 0 probes without touching the process
    except OSError:
        return False
    return True


def spawn(role: str, service: str, port: int, env: Mapping[str, str], logs: Path) -> Process:
    """Start `simsearch serve SERVICE` detached (its own session) with its own log file."""
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{role}.log"
    full_env = {**os.environ, "SIMSEARCH_HOST": "127.0.0.1", "SIMSEARCH_PORT": str(port), **env}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "simsearch.cli", *SERVE_ARGS[service]],
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Process(role, proc.pid, port, str(log))


def wait_ready(process: Process, timeout_s: float, path: str = "/health/ready") -> None:
    """Poll readiness until it answers 200; fail with the log's tail if the process dies."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if not alive(process.pid):
                tail = Path(process.log).read_text(errors="replace")[-2000:]
                raise ConfigError(f"{process.role} exited while starting:\n{tail}")
            try:
                if client.get(process.url + path).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    raise ConfigError(f"{process.role} not ready after {timeout_s:.0f}s; see {process.log}")


def stop(process: Process, timeout_s: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if it does not go in time."""
    if not alive(process.pid):
        return
    os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and alive(process.pid):
        time.sleep(0.1)
    if alive(process.pid):
        os.kill(process.pid, signal.SIGKILL)
