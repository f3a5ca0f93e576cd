"""A minimal keep-alive HTTP/1.1 client for the router's JSON POSTs to shards.

Why not aiohttp for these: a query's fan-out is one small POST per shard, and at 1M
vectors the router's CPU per query, not FAISS, sets throughput. With every hop doing
nothing (`scripts/bench/http_floor.py`, docs/benchmarks.md §8), a router fanning out
to two shards over aiohttp costs 0.72 ms p50 and caps at ~2,100 QPS on this machine; the
same hops over bare sockets cost 0.34 ms and ~3,000 QPS. aiohttp's per-request machinery
(request and response objects, timers, tracing hooks, cookie handling) is most of that.
This client keeps what these calls need and nothing else: a pool of idle connections
per host, one request at a time per connection, responses parsed by `httptools` (the C
parser uvicorn serves with), a deadline per call. Everything else (GETs, multipart
uploads, https) stays on aiohttp through `transport.Upstream`.

Failures are typed for `Upstream` to map: `ConnectFailed` (no connection could be made:
the shard is down), `ExchangeFailed` (the connection broke or the answer was malformed).
A reused keep-alive connection that the server had closed just before our request is
retried once on a fresh one, when not a byte of the answer had arrived (aiohttp does the
same); the calls made here are reads or idempotent (search, reload).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import httptools

__all__ = ["ConnectFailed", "ExchangeFailed", "Http1Pool", "Target", "target_of"]

MAX_BODY_BYTES = 256 * 1024 * 1024  # a shard's answer is KBs; refuse to buffer a runaway one


class ConnectFailed(Exception):
    """No connection could be made (refused, unknown host, unreachable)."""


class ExchangeFailed(Exception):
    """Connected, but no complete, well-formed answer came back."""


@dataclass(frozen=True)
class Target:
    """Where a URL points: host, port, the `Host` header and the request target."""

    host: str
    port: int
    authority: str
    path: str


@lru_cache(maxsize=4096)
def target_of(url: str) -> Target | None:
    """`url` split once (queries repeat the same few URLs); None if not plain http."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        return None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    port = parts.port or 80
    return Target(parts.hostname, port, parts.netloc, path)


@dataclass
class _Answer:
    """What the parser collected for the request in flight."""

    status: int = 0
    content_type: str = ""
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    keep_alive: bool = True


class _Connection(asyncio.Protocol):
    """One TCP connection: a request is written, its answer parsed as bytes arrive."""

    def __init__(self) -> None:
        self.transport: Any = None  # asyncio's or uvloop's TCP transport
        self.closed = False
        self.idle_since = time.monotonic()
        self._parser: httptools.HttpResponseParser | None = None
        self._answer = _Answer()
        self._done: asyncio.Future[_Answer] | None = None
        self._header_name = b""
        self.received_any = False

    # --- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # uvloop's is not an asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        if self._parser is None or self._done is None or self._done.done():
            self.close()  # bytes nobody asked for: this connection is out of step
            return
        self.received_any = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ExchangeFailed(f"malformed HTTP answer: {exc}"))
        except ExchangeFailed as exc:
            self._fail(exc)

    def eof_received(self) -> bool | None:
        self.closed = True
        return None  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        reason = f"connection lost ({exc or 'closed by the server'})"
        self._fail(ExchangeFailed(reason))

    # --- httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"content-type":
            self._answer.content_type = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        self._answer.status = self._parser.get_status_code()
        self._answer.keep_alive = self._parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self._answer.size += len(body)
        if self._answer.size > MAX_BODY_BYTES:
            raise ExchangeFailed(f"answer over {MAX_BODY_BYTES} bytes")
        self._answer.chunks.append(body)

    def on_message_complete(self) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(self._answer)

    # --- use

    def send(self, request: bytes) -> asyncio.Future[_Answer]:
        """Write one request; the future is its parsed answer."""
        assert self.transport is not None
        self._parser = httptools.HttpResponseParser(self)
        self._answer = _Answer()
        self.received_any = False
        self._done = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self._done

    def _fail(self, exc: Exception) -> None:
        self.close()
        if self._done is not None and not self._done.done():
            self._done.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class Http1Pool:
    """Idle keep-alive connections per (host, port), reused one request at a time."""

    def __init__(self, max_idle_per_host: int, keepalive_s: float) -> None:
        self.max_idle_per_host = max(1, max_idle_per_host)
        self.keepalive_s = keepalive_s
        self._idle: dict[tuple[str, int], deque[_Connection]] = {}

    async def post(
        self, target: Target, headers: dict[str, str], body: bytes, timeout_s: float
    ) -> tuple[int, str, bytes]:
        """POST `body`; (status, content type, body) within `timeout_s` or TimeoutError."""
        request = _request_bytes(target, headers, body)
        async with asyncio.timeout(max(timeout_s, 0.001)):
            conn, reused = self._take(target), True
            if conn is None:
                conn, reused = await self._connect(target), False
            try:
                answer = await self._exchange(conn, request)
            except ExchangeFailed:
                if not reused or conn.received_any:
                    raise
                # a stale keep-alive connection: the server closed it as we wrote
                conn = await self._connect(target)
                answer = await self._exchange(conn, request)
        if answer.keep_alive and not conn.closed:
            self._give_back(target, conn)
        else:
            conn.close()
        return answer.status, answer.content_type, b"".join(answer.chunks)

    async def _exchange(self, conn: _Connection, request: bytes) -> _Answer:
        try:
            return await conn.send(request)
        except BaseException:  # a timeout or cancellation mid-answer: never reuse it
            conn.close()
            raise

    def _take(self, target: Target) -> _Connection | None:
        idle = self._idle.get((target.host, target.port))
        now = time.monotonic()
        while idle:
            conn = idle.pop()  # the most recently used: least likely to be stale
            if not conn.closed and now - conn.idle_since < self.keepalive_s:
                return conn
            conn.close()
        return None

    def _give_back(self, target: Target, conn: _Connection) -> None:
        idle = self._idle.setdefault((target.host, target.port), deque())
        conn.idle_since = time.monotonic()
        idle.append(conn)
        while len(idle) > self.max_idle_per_host:
            idle.popleft().close()

    async def _connect(self, target: Target) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(_Connection, target.host, target.port)
        except OSError as exc:  # refused, unknown host, unreachable network
            raise ConnectFailed(f"unreachable ({exc})") from exc
        return conn

    def close(self) -> None:
        """Close every idle connection (the app is stopping)."""
        for idle in self._idle.values():
            while idle:
                idle.pop().close()
        self._idle.clear()


def _request_bytes(target: Target, headers: dict[str, str], body: bytes) -> bytes:
    lines = [
        f"POST {target.path} HTTP/1.1",
        f"Host: {target.authority}",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in headers.items() if _safe(name, value)),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _safe(name: str, value: str) -> bool:
    """No header may carry a line break (a forwarded request id comes from the client)."""
    return not any(c in name or c in value for c in "\r\n")
