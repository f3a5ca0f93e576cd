"""A local cluster's processes and state file: spawn, wait for readiness, stop.

The services are the ones the Helm chart runs, started as `simsearch serve ROLE` child
processes on loopback with the `file` topology and discovery sources: `topology.json`
(how many shards exist, read by every shard) and `shards.json` (their URLs, read by the
router) in the state folder. `scale` rewrites both, exactly as a StatefulSet resize
changes what the Kubernetes sources report. Every process logs to `logs/ROLE.log`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from simsearch.common.errors import ConfigError
from simsearch.local.roles import SERVE_ARGS

STATE_FILE = "state.json"


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
    """What `up` started, so that `scale`, `status` and `down` can find it."""

    folder: str
    store: str
    index: str
    images: str
    port: int
    replication: int = 1
    processes: list[Process] = field(default_factory=list)
    supervisor_pid: int | None = None  # `simsearch supervise` (local/supervisor.py)

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
