"""Where a shard list comes from: the `ShardSource` interface and the simple sources.

`StaticSource` (`SIMSEARCH_SHARDS`), `FileSource` (a JSON file rewritten by local mode)
and `DnsSource` (the A records of a headless Service). The Kubernetes source lives in
`router/kube.py` (its client takes a second to import); `router/discovery.py` picks one
from the settings. Both depend on this module and this module on neither, so there is no
import loop between them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from abc import ABC, abstractmethod
from pathlib import Path

__all__ = ["DnsSource", "FileSource", "ShardSource", "StaticSource"]

log = logging.getLogger(__name__)


class ShardSource(ABC):
    """Lists the shard base URLs to poll; asked again on every poll."""

    @abstractmethod
    async def urls(self) -> list[str]:
        """The current shard URLs (no trailing slash)."""

    def close(self) -> None:  # noqa: B027 - optional hook, most sources hold nothing
        """Release what the source holds (the Kubernetes source's watch thread)."""


class StaticSource(ShardSource):
    """A fixed list (`SIMSEARCH_SHARDS`)."""

    def __init__(self, urls: list[str]) -> None:
        self._urls = list(urls)

    async def urls(self) -> list[str]:
        return list(self._urls)


class FileSource(ShardSource):
    """`{"shards": [...]}` in a file that `simsearch up/scale` rewrites (local mode).

    A missing or half-written file keeps the last good list: the writer replaces the file
    atomically, but a router must not drop every shard because of one bad read.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._last: list[str] = []

    async def urls(self) -> list[str]:
        try:
            text = await asyncio.to_thread(self.path.read_text, "utf-8")
            data = json.loads(text)
            urls = [str(u).strip().rstrip("/") for u in data["shards"] if str(u).strip()]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning(
                "cannot read shard list %s: %s; keeping %d shards", self.path, exc, len(self._last)
            )
            return list(self._last)
        self._last = urls
        return list(urls)


class DnsSource(ShardSource):
    """The A/AAAA records of a headless Service: one per ready shard pod.

    Resolved with the system resolver on every poll (no caching beyond the OS's), so a
    scaled StatefulSet shows up within one poll. A name that does not resolve (no pod yet)
    is an empty list, not an error.
    """

    def __init__(self, name: str, port: int, scheme: str = "http") -> None:
        self.name, self.port, self.scheme = name, port, scheme

    async def urls(self) -> list[str]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(self.name, self.port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            log.warning("cannot resolve shard service %s: %s", self.name, exc)
            return []
        hosts = sorted({str(info[4][0]) for info in infos})
        return [f"{self.scheme}://{_bracket(h)}:{self.port}" for h in hosts]


def _bracket(host: str) -> str:
    """IPv6 literals go in brackets inside a URL."""
    return f"[{host}]" if ":" in host else host
