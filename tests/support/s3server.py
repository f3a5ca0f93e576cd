"""A real moto S3 server in a subprocess, reached over loopback HTTP like MinIO would be.

The tests exercise the actual boto3/botocore stack (signing, retries, multipart, HTTP
errors), which in-process patching (`mock_aws`) would bypass.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import IO, Any

STARTUP_TIMEOUT_S = 30.0
_POLL_INTERVAL_S = 0.05
_START_TRIES = 3  # a free port can be taken between free_port() and the server's bind


# moto accepts any credentials; these are what every test process is given
AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def s3_client(endpoint: str) -> Any:
    """A boto3 S3 client for the moto server at `endpoint` (over HTTP, never patched)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_port_block(span: int = 20) -> int:
    """A base port whose `span` ports from it are all free, below the ephemeral range.

    `simsearch up --port P` puts its other services at P+1 and P+10+ordinal. A base from
    `free_port` lies in the kernel's ephemeral range (32768+ here), where the client side of
    any open connection may already hold P+10; ports below it are only taken by listeners.
    """
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20_000, 32_000 - span)
        if all(_bindable(port) for port in range(base, base + span)):
            return base
    raise RuntimeError(f"no {span} free consecutive ports between 20000 and 32000")


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _answers(url: str) -> bool:
    """Whether an HTTP server answers at `url`; any HTTP status counts as an answer."""
    try:
        with urllib.request.urlopen(url, timeout=1.0) as resp:
            resp.read()
    except urllib.error.HTTPError as exc:
        exc.close()
        return True
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False
    return True


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Terminate politely, then kill: a test must never leave a server behind."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _tail(log: IO[bytes]) -> str:
    log.flush()
    log.seek(0)
    return log.read()[-2000:].decode(errors="replace")


@contextlib.contextmanager
def moto_server(host: str = "127.0.0.1", timeout_s: float = STARTUP_TIMEOUT_S) -> Iterator[str]:
    """Run `python -m moto.server` on a free port; yield its endpoint URL; stop it after.

    Readiness is polled (bounded by `timeout_s`) rather than slept for; if the process
    dies first (e.g. the port was grabbed meanwhile) it is restarted on another port.
    """
    env = dict(os.environ)
    env.pop("MOTO_PORT", None)  # moto.server would prefer it over -p for some URLs
    deadline = time.monotonic() + timeout_s
    with tempfile.NamedTemporaryFile(prefix="moto-server-", suffix=".log") as log:
        for _attempt in range(_START_TRIES):
            port = free_port()
            url = f"http://{host}:{port}"
            proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
            try:
                while proc.poll() is None and time.monotonic() < deadline:
                    if _answers(f"{url}/moto-api/"):
                        break
                    time.sleep(_POLL_INTERVAL_S)
                if proc.poll() is not None:
                    continue  # died during start-up: try another port
                if time.monotonic() >= deadline and not _answers(f"{url}/moto-api/"):
                    raise RuntimeError(
                        f"moto server at {url} did not answer within {timeout_s}s:\n{_tail(log)}"
                    )
                yield url
                return
            finally:
                stop_process(proc)
        raise RuntimeError(
            f"moto server exited during start-up {_START_TRIES} times:\n{_tail(log)}"
        )
