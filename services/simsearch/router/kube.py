"""Shard discovery from the Kubernetes API: the shard Service's EndpointSlices, watched.

A daemon thread (the shared `common/kube.py` `Reflector`: list, then watch from the
list's resourceVersion, 410 Gone → list again, back off on errors and keep what is known)
holds every slice of the Service; `urls()` returns the cached list, so the event loop never
waits on the API server.

Which endpoints become URLs:

* ready *and* not-ready ones: the router polls each shard's `/info` and decides itself
  what it can use (a loading shard already answers `/info` and says what it holds);
* terminating ones only while they still serve: a shard pod scaled away sleeps through
  its preStop drain still ready (its endpoint says `serving`), keeping its partitions
  available until the survivors have loaded them; once it stops serving it is dropped;
* one address per pod: the first of the endpoint (Kubernetes says addresses are
  fungible), and the IPv4 one when a dual-stack Service lists the pod in an IPv4 and an
  IPv6 slice (a shard binding 0.0.0.0 answers only there); FQDN slices are ignored;
* the port named `http` of the slice, else `SIMSEARCH_SHARD_PORT`.

Only `list` and `watch` of EndpointSlices with the Service's label selector are used:
exactly what the chart's Role grants.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from kubernetes import client

from simsearch.common.kube import REQUEST_TIMEOUT, Reflector, default_namespace, read_json
from simsearch.common.ordinal import parse_ordinal
from simsearch.router.source import ShardSource

__all__ = ["KubernetesSource", "Member", "slice_members"]

log = logging.getLogger(__name__)

SERVICE_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True)
class Member:
    """One shard endpoint of a slice."""

    url: str
    pod: str | None  # targetRef.name: the pod, when the slice says
    ordinal: int | None  # the pod name's StatefulSet ordinal
    ipv6: bool

    @property
    def key(self) -> str:
        """What identifies the shard across slices: its pod, else its URL."""
        return self.pod or self.url


def _port(ports: list[dict[str, Any]] | None, default: int) -> int:
    """The slice's port named `http`, else the configured one."""
    for port in ports or []:
        if port.get("name") == "http" and isinstance(port.get("port"), int):
            return int(port["port"])
    return default


def slice_members(obj: dict[str, Any], scheme: str, default_port: int) -> list[Member]:
    """The usable endpoints of one EndpointSlice (plain JSON), in its order."""
    family = obj.get("addressType")
    if family not in ("IPv4", "IPv6"):
        return []  # FQDN slices name hosts, not shard pods
    port = _port(obj.get("ports"), default_port)
    members = []
    for endpoint in obj.get("endpoints") or []:
        addresses = endpoint.get("addresses") or []
        conditions = endpoint.get("conditions") or {}
        if not addresses or (
            conditions.get("terminating") is True and not conditions.get("serving")
        ):
            continue
        host = f"[{addresses[0]}]" if family == "IPv6" else str(addresses[0])
        name = (endpoint.get("targetRef") or {}).get("name")
        pod = name if isinstance(name, str) else None
        ordinal = parse_ordinal(pod) if pod else None
        members.append(Member(f"{scheme}://{host}:{port}", pod, ordinal, family == "IPv6"))
    return members


def one_per_pod(members: list[Member]) -> list[Member]:
    """Each pod once (IPv4 preferred), sorted by URL."""
    chosen: dict[str, Member] = {}
    for member in sorted(members, key=lambda m: (m.ipv6, m.url)):
        chosen.setdefault(member.key, member)
    return sorted(chosen.values(), key=lambda m: m.url)


class KubernetesSource(Reflector, ShardSource):
    """The shard pods behind a Service, from its EndpointSlices (list + watch)."""

    def __init__(
        self,
        service: str,
        namespace: str | None = None,
        port: int = 8002,
        scheme: str = "http",
        api: Any | None = None,
        *,
        watch_timeout_s: int = 60,
        first_wait_s: float = 1.0,
    ) -> None:
        self.service, self.port, self.scheme = service, port, scheme
        self.namespace = namespace or default_namespace()
        self.first_wait_s = first_wait_s
        self._lock = threading.Lock()
        self._slices: dict[str, list[Member]] = {}
        self._members: list[Member] = []
        super().__init__(
            f"EndpointSlices of {self.namespace}/{service}", api, watch_timeout_s=watch_timeout_s
        )
        self._discovery = client.DiscoveryV1Api(self.api)
        self._begin()

    async def urls(self) -> list[str]:
        """The cached shard URLs; the first call awaits the initial list (≤ first_wait_s)
        in a worker thread, so the router's first poll already sees the shards."""
        if not self._first_try.is_set():
            await asyncio.to_thread(self._first_try.wait, self.first_wait_s)
        return [m.url for m in self._members]

    def ordinals(self) -> dict[str, int]:
        """URL → StatefulSet ordinal of every shard whose pod name has one (logs, stats)."""
        return {m.url: m.ordinal for m in self._members if m.ordinal is not None}

    def _resync(self) -> str:
        listing = read_json(
            self._discovery.list_namespaced_endpoint_slice(
                self.namespace,
                label_selector=f"{SERVICE_LABEL}={self.service}",
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
        )
        slices = {
            str(item["metadata"]["name"]): slice_members(item, self.scheme, self.port)
            for item in listing.get("items") or []
        }
        with self._lock:
            self._slices = slices
            self._publish()
        return str(listing["metadata"]["resourceVersion"])

    def _stream(self, watcher: Any, version: str) -> Iterator[dict[str, Any]]:
        return self._watch_from(
            watcher,
            self._discovery.list_namespaced_endpoint_slice,
            version,
            label_selector=f"{SERVICE_LABEL}={self.service}",
        )

    def _apply(self, kind: str, obj: dict[str, Any]) -> None:
        name = str(obj["metadata"]["name"])
        with self._lock:
            if kind == "DELETED":
                self._slices.pop(name, None)
            else:
                self._slices[name] = slice_members(obj, self.scheme, self.port)
            self._publish()

    def _publish(self) -> None:
        """Recompute the shard list from every slice (under the lock); log what changed."""
        members = one_per_pod([m for ms in self._slices.values() for m in ms])
        before = {m.url for m in self._members}
        after = {m.url for m in members}
        if after != before:
            log.info(
                "%s: %d shards (+%s -%s)",
                self.what,
                len(after),
                sorted(after - before) or "[]",
                sorted(before - after) or "[]",
            )
        self._members = members  # one assignment: readers see the old or the new list
