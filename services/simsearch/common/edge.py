"""The HTTP edge every service serves behind: head size, head and body deadlines.

uvicorn's httptools protocol (the fast one, which the hot paths need) has none of these:
an outside probe sent a 10 MB header and it was accepted; ten unfinished 20 MB headers
held 200 MB of RSS with no timeout; a fresh connection that never sends a byte, or one
that trickles a byte now and then, lives as long as the client wants (the keep-alive
timer only runs *between* requests, and every byte received cancels it). uvicorn's h11
protocol bounds the head but is several times slower per request.

`GuardedHttpToolsProtocol` keeps httptools and adds, per connection:
- a **head limit** (`max_head_bytes`): the request line plus headers. Over it, the answer
  is 431 and the connection is closed, before the rest is buffered;
- a **head deadline** (`head_timeout_s`): from the connection's start, or the end of the
  previous answer, to the end of the next request's headers. A slow-loris client or an
  idle connection is closed at it (with 408 when a request had begun);
- a **body deadline** (`body_timeout_s`): from the end of the headers to the end of the
  body, so a trickled upload cannot hold a request open forever.
Connection count and idle keep-alive stay uvicorn's (`limit_concurrency`,
`timeout_keep_alive`), set from the same settings (`EdgeLimits`).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["EdgeLimits", "GuardedHttpToolsProtocol", "protocol_for"]

_REASONS = {408: "Request Timeout", 431: "Request Header Fields Too Large"}
_CODES = {408: "request_timeout", 431: "headers_too_large"}


@dataclass(frozen=True)
class EdgeLimits:
    """What one service allows per connection (see the module docstring)."""

    max_head_bytes: int = 32 * 1024
    head_timeout_s: float = 10.0
    body_timeout_s: float = 60.0


class _HeadTooLarge(Exception):
    """Raised from a parser callback: httptools stops parsing at once."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the edge limits of `EdgeLimits`."""

    limits = EdgeLimits()

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._in_head = True
        self._head_received = 0  # bytes since the head began (all of them, parsed or not)
        self._head_parsed = 0  # request line + headers as parsed
        self._too_large = False
        self._timer: asyncio.TimerHandle | None = None
        self._arm(self.limits.head_timeout_s, self._head_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_received += len(data)
        super().data_received(data)
        if self._in_head and self._head_received > self.limits.max_head_bytes:
            self._refuse(431, f"request head over {self.limits.max_head_bytes} bytes")

    # --- parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_parsed = 0

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_received = 0
        self._arm(self.limits.body_timeout_s, self._body_late)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._in_head = True
            self._head_received = 0
            self._arm(self.limits.head_timeout_s, self._head_late)

    def send_400_response(self, msg: str) -> None:
        if self._too_large:  # the parser stopped on our _HeadTooLarge
            self._refuse(431, f"request head over {self.limits.max_head_bytes} bytes")
        else:
            super().send_400_response(msg)

    # --- ours

    def _count(self, size: int) -> None:
        self._head_parsed += size
        if self._head_parsed > self.limits.max_head_bytes:
            self._too_large = True
            raise _HeadTooLarge()

    def _arm(self, seconds: float, then: Any) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, then)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_late(self) -> None:
        if self.transport.is_closing():
            return
        if self._head_received or self._head_parsed:  # a request had begun
            self._refuse(408, f"request head not received within {self.limits.head_timeout_s} s")
        else:  # idle: nothing to answer
            self.transport.close()

    def _body_late(self) -> None:
        """The body did not arrive in time: drop the connection (the app sees a disconnect)."""
        if not self.transport.is_closing():
            self.transport.close()

    def _refuse(self, status: int, reason: str) -> None:
        """Answer `status` with the uniform error body, then close (no more parsing)."""
        self._disarm()
        if self.transport.is_closing():
            return
        body = json.dumps(
            {"status": "error", "error": _CODES[status], "detail": reason, "request_id": None}
        ).encode()
        head = (
            f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
            "content-type: application/json\r\n"
            f"content-length: {len(body)}\r\n"
            "connection: close\r\n\r\n"
        ).encode("latin-1")
        self.transport.write(head + body)
        self.transport.close()


def protocol_for(limits: EdgeLimits) -> type[GuardedHttpToolsProtocol]:
    """A protocol class bound to `limits` (uvicorn takes a class, not an instance)."""
    return type("EdgeProtocol", (GuardedHttpToolsProtocol,), {"limits": limits})
