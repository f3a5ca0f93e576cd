"""A TCP forwarder as its own process: the S3 endpoint the services see, stoppable at will.

The moto server keeps its buckets in memory, so stopping *it* would lose the store; the
fault tests stop this proxy instead (every connection through it is cut, new ones are
refused), which is what an S3 outage looks like to a client, and start it again on the
same port, which is what its return looks like. `--die-after-bytes N` makes it exit by
itself once N bytes have passed (either direction): an outage in the *middle* of a
transfer without a race against a test's clock.

    python -m tests.support.tcpproxy --listen PORT --target HOST:PORT [--die-after-bytes N]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import threading

_CHUNK = 64 * 1024


class Budget:
    """Bytes left before the proxy exits (None: no limit), shared by every connection."""

    def __init__(self, limit: int | None) -> None:
        self.left = limit
        self.lock = threading.Lock()

    def spend(self, n: int) -> None:
        if self.left is None:
            return
        with self.lock:
            self.left -= n
            if self.left <= 0:
                os._exit(0)  # the outage: every socket goes at once, like a dead server


def pipe(src: socket.socket, dst: socket.socket, budget: Budget) -> None:
    """Copy src to dst until either side closes."""
    try:
        while data := src.recv(_CHUNK):
            budget.spend(len(data))
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def serve(listen: int, target: tuple[str, int], budget: Budget) -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", listen))
    server.listen(128)
    print("ready", flush=True)
    while True:
        client, _ = server.accept()
        try:
            upstream = socket.create_connection(target, timeout=5)
        except OSError:
            client.close()
            continue
        upstream.settimeout(None)
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=pipe, args=(a, b, budget), daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--die-after-bytes", type=int)
    args = parser.parse_args()
    host, port = args.target.rsplit(":", 1)
    serve(args.listen, (host, int(port)), Budget(args.die_after_bytes))


class TcpProxy:
    """The proxy as a child process on one fixed port, stopped and started by a test."""

    def __init__(self, target_url: str) -> None:
        from tests.support.s3server import free_port

        self.target = target_url.split("://", 1)[-1].rstrip("/")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, die_after_bytes: int | None = None) -> None:
        """Listen again on the same port; returns once it accepts connections."""
        cmd = [sys.executable, "-m", "tests.support.tcpproxy", "--listen", str(self.port)]
        cmd += ["--target", self.target]
        if die_after_bytes is not None:
            cmd += ["--die-after-bytes", str(die_after_bytes)]
        self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE)
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"proxy on {self.port} did not start")

    def stop(self) -> None:
        """SIGKILL: connections are cut mid-transfer, new ones refused."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait(timeout=5)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


if __name__ == "__main__":
    main()
