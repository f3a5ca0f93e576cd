"""Run simsearch services as real processes on loopback and wait until they are ready.

No sleep-and-hope: `start_service` polls the readiness endpoint (bounded in time) and
fails at once, with the process's log, if the process exits first.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.paths import SERVICES
from tests.support.s3server import free_port, stop_process


@dataclass
class Service:
    """A started service: its base URL, process and log file."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_for(
    check: Callable[[], bool],
    timeout_s: float = 60,
    what: str = "the condition",
    ignore: tuple[type[BaseException], ...] = (),
) -> float:
    """Poll `check` every 0.1 s until it holds; the seconds it took. Fails naming `what` at
    the deadline; exceptions of the `ignore` types count as "not yet"."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            if check():
                return time.monotonic() - started
        except ignore:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {timeout_s}s")


def wait_ready(service: Service, path: str, timeout_s: float) -> None:
    """Poll `path` until it answers 200; raise with the log if the process dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if service.process.poll() is not None:
                raise RuntimeError(
                    f"service exited with {service.process.returncode}:\n{service.log()}"
                )
            try:
                if client.get(service.url + path).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    raise TimeoutError(f"{service.url}{path} not ready after {timeout_s}s:\n{service.log()}")


def checkout_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment with this checkout's `services/` first on `PYTHONPATH`, so a child
    `python -m simsearch.cli` runs the code under test, not whatever `simsearch` the venv
    has installed (a git worktree's tests would otherwise start the main checkout's)."""
    path = os.pathsep.join(p for p in (str(SERVICES), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, **(extra or {})}


@contextmanager
def start_service(
    role: str, env: Mapping[str, str], ready_path: str = "/health/ready", timeout_s: float = 120
) -> Iterator[Service]:
    """`simsearch serve ROLE` on a free loopback port with extra `SIMSEARCH_*` env."""
    port = free_port()
    log_path = Path(tempfile.mkdtemp(prefix="simsearch-")) / f"{role}.log"
    full_env = checkout_env({"SIMSEARCH_HOST": "127.0.0.1", "SIMSEARCH_PORT": str(port), **env})
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "simsearch.cli", "serve", role],
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    service = Service(f"http://127.0.0.1:{port}", process, log_path)
    try:
        wait_ready(service, ready_path, timeout_s)
        yield service
    finally:
        stop_process(process)


def run_cli(*args: str, cwd: Path, timeout_s: float = 400) -> subprocess.CompletedProcess[str]:
    """`simsearch ARGS` as a child process (what a user types), output captured."""
    return subprocess.run(
        [sys.executable, "-m", "simsearch.cli", *args],
        cwd=cwd,
        env=checkout_env(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
