"""The floor of the router → shards design on this machine: the same hops with no work.

    python scripts/bench/http_floor.py --out docs/bench/http_floor.json

Why: after the fast-scan plan, the cluster's latency and throughput at 100k–1M are set
more by the Python hops than by FAISS (docs/benchmarks.md §8). Before trimming further,
this measures what the hops cost when they do nothing at all, with the same client,
server stack and shapes as `search_bench.py`:

- `shard`: one uvicorn (uvloop + httptools, as `simsearch serve`) ASGI app that parses the
  JSON body and answers a fixed 10-hit JSON, called directly;
- `router-aiohttp`: a null router (uvicorn ASGI) that sends each query to two null shards
  over aiohttp (the router's transport) at once and merges their answers;
- `router-tcp`: the same null router talking to two raw-TCP null shards (asyncio protocol,
  length-prefixed frames, no HTTP): what a binary router↔shard protocol could at best save.

Each is measured like the cluster: p50/p99 of 300 sequential `POST`s of a 1280-d JSON
vector, then QPS with 8 client threads for `--seconds`, with the CPU ms per query of every
server process and of the client over that loaded pass. Everything, client included,
shares this machine's cores. The servers are this same script (`--serve ROLE PORT`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_bench import latency, loaded_pass  # a sibling script: the cluster's own client

ANSWER = orjson.dumps(
    {
        "results": [
            {"id": i, "similarity_score": 0.9 - i / 100, "path": f"x/{i}.jpg"} for i in range(10)
        ]
    }
)
Scope = dict[str, Any]


async def _body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _answer(send: Any, payload: bytes) -> None:
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def null_shard(scope: Scope, receive: Any, send: Any) -> None:
    """Parse the body (the real shard must), answer a fixed top-10."""
    if scope["type"] == "http":
        body = await _body(receive)
        if body:
            orjson.loads(body)
        await _answer(send, ANSWER)


class TcpShard(asyncio.Protocol):
    """A null shard without HTTP: 4-byte length, JSON frame in; the same frame shape out."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 4:
            (size,) = struct.unpack("<I", self.buffer[:4])
            if len(self.buffer) < 4 + size:
                return
            frame, self.buffer = self.buffer[4 : 4 + size], self.buffer[4 + size :]
            orjson.loads(frame)
            self.transport.write(struct.pack("<I", len(ANSWER)) + ANSWER)


class NullRouter:
    """Parse the query, ask every shard at once, merge by score, answer the top 10."""

    def __init__(self, ports: list[int], mode: str) -> None:
        self.ports = ports
        self.mode = mode
        self.session: Any = None
        self.idle: dict[int, list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = {}

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        query = orjson.loads(await _body(receive)) if scope["method"] == "POST" else {}
        vector = np.asarray(query.get("vector", [0.0]), np.float32)
        payload = orjson.dumps({"queries": [vector.tolist()], "k": 10})
        ask = self._http if self.mode == "aiohttp" else self._tcp
        replies = await asyncio.gather(*(ask(port, payload) for port in self.ports))
        hits = [hit for reply in replies for hit in orjson.loads(reply)["results"]]
        hits.sort(key=lambda hit: -hit["similarity_score"])
        await _answer(send, orjson.dumps({"results": hits[:10]}))

    async def _lifespan(self, receive: Any, send: Any) -> None:
        import aiohttp

        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
                await send({"type": "lifespan.startup.complete"})
            else:
                await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, port: int, payload: bytes) -> bytes:
        url = f"http://127.0.0.1:{port}/search"
        headers = {"content-type": "application/json"}
        async with self.session.post(url, data=payload, headers=headers) as response:
            body: bytes = await response.read()
            return body

    async def _tcp(self, port: int, payload: bytes) -> bytes:
        idle = self.idle.setdefault(port, [])
        reader, writer = idle.pop() if idle else await asyncio.open_connection("127.0.0.1", port)
        writer.write(struct.pack("<I", len(payload)) + payload)
        (size,) = struct.unpack("<I", await reader.readexactly(4))
        reply = await reader.readexactly(size)
        idle.append((reader, writer))
        return reply


def serve(role: str, port: int, shard_ports: list[int]) -> None:
    """Run one null server in this process (uvloop, httptools: `simsearch serve`'s stack)."""
    import uvicorn
    import uvloop

    if role == "tcp-shard":

        async def run() -> None:
            server = await asyncio.get_running_loop().create_server(TcpShard, "127.0.0.1", port)
            await server.serve_forever()

        uvloop.run(run())
        return
    app: Any = null_shard if role == "shard" else NullRouter(shard_ports, role.split("-")[1])
    lifespan = "on" if role.startswith("router") else "off"
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan=lifespan)


def wait_port(port: int, timeout_s: float = 30) -> None:
    """Until something accepts TCP connections on `port` (servers start in ~1 s)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"port {port} is not listening")


def spawn(role: str, port: int, shard_ports: list[int]) -> subprocess.Popen[bytes]:
    args = [sys.executable, __file__, "--serve", role, str(port), *map(str, shard_ports)]
    return subprocess.Popen(args, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def measure(
    port: int, payloads: list[bytes], seconds: float, pids: dict[str, int]
) -> dict[str, Any]:
    """p50/p99 at concurrency 1, QPS at 8, and each process's CPU ms per query at 8."""
    times, _ = latency(port, payloads)
    qps, _, cpu = loaded_pass(port, payloads, seconds, pids)
    return {
        "p50_ms": float(np.percentile(times, 50) * 1000),
        "p99_ms": float(np.percentile(times, 99) * 1000),
        "qps_c8": qps,
        "cpu_ms_per_query_c8": cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=19100)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]), [int(p) for p in args.serve[2:]])
        return
    rng = np.random.default_rng(0)
    q = rng.standard_normal((300, args.dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    payloads = [json.dumps({"vector": v.tolist(), "k": 10}).encode() for v in q]
    p = args.port
    setups = {
        "shard": [("shard", p + 1, [])],
        "router-aiohttp": [
            ("shard", p + 1, []),
            ("shard", p + 2, []),
            ("router-aiohttp", p, [p + 1, p + 2]),
        ],
        "router-tcp": [
            ("tcp-shard", p + 1, []),
            ("tcp-shard", p + 2, []),
            ("router-tcp", p, [p + 1, p + 2]),
        ],
    }
    result: dict[str, Any] = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "cores": os.cpu_count(),
        "dim": args.dim,
    }
    for name, servers in setups.items():
        procs = [spawn(role, port, shards) for role, port, shards in servers]
        try:
            for _, port, _ in servers:
                wait_port(port)
            pids = {
                f"{role}:{port}": proc.pid
                for (role, port, _), proc in zip(servers, procs, strict=True)
            }
            result[name] = measure(servers[-1][1], payloads, args.seconds, pids)
            print(name, result[name], flush=True)
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=10)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
