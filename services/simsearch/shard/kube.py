"""The shard count from the Kubernetes API: the StatefulSet's `spec.replicas`, watched.

`KubernetesTopology` keeps one number fresh in a daemon thread so that `replicas()`, which
the shard's poller calls every few seconds, only reads memory. The thread is the shared
list-then-watch loop (`simsearch.common.kube.Reflector`, also used by the router's
EndpointSlice discovery): get, watch from that resourceVersion, 410 Gone → get again,
back off on errors and keep the last known state.

Only the verbs the chart's Role grants are used: `get` on the one StatefulSet, and `watch`
with a `metadata.name` field selector (allowed with `resourceNames`); never a plain list.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from kubernetes import client

from simsearch.common.errors import TopologyUnknown
from simsearch.common.kube import REQUEST_TIMEOUT, Reflector, default_namespace, read_json

__all__ = ["KubernetesTopology"]

log = logging.getLogger(__name__)


class KubernetesTopology(Reflector):
    """`spec.replicas` of the shards' StatefulSet, kept fresh by a watch.

    `replicas()` answers from memory; on its very first call it waits up to
    `first_wait_s` for the initial get, so a shard that just started plans with the real
    N instead of reporting "unknown" for one poll. A StatefulSet scaled to 0 still has
    this shard running (it is being stopped), so 0 is taken as 1: never a division by
    zero in placement, and nothing reloaded for a pod about to exit.
    """

    def __init__(
        self,
        name: str,
        namespace: str | None = None,
        api: Any | None = None,
        *,
        watch_timeout_s: int = 60,
        first_wait_s: float = 1.0,
    ) -> None:
        self.name = name
        self.namespace = namespace or default_namespace()
        self.first_wait_s = first_wait_s
        self._replicas: int | None = None
        self._declared: int | None = None  # spec.replicas as written, 0 included
        super().__init__(
            f"StatefulSet {self.namespace}/{name}", api, watch_timeout_s=watch_timeout_s
        )
        self._apps = client.AppsV1Api(self.api)
        self._begin()

    def replicas(self) -> int:
        self._first_try.wait(self.first_wait_s)  # returns at once after the first read
        value = self._replicas
        if value is None:
            raise TopologyUnknown(
                f"{self.what} not read yet: {self.problem or 'waiting for the API server'}"
            )
        return value

    def describe(self) -> str:
        return f"kubernetes({self.namespace}/{self.name})"

    def _resync(self) -> str:
        reply = self._apps.read_namespaced_stateful_set(
            self.name, self.namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
        )
        statefulset = read_json(reply)
        self._take(statefulset)
        return str(statefulset["metadata"]["resourceVersion"])

    def _stream(self, watcher: Any, version: str) -> Iterator[dict[str, Any]]:
        return self._watch_from(
            watcher,
            self._apps.list_namespaced_stateful_set,
            version,
            field_selector=f"metadata.name={self.name}",
        )

    def _apply(self, kind: str, obj: dict[str, Any]) -> None:
        if kind == "DELETED":
            log.warning("%s was deleted; keeping replicas=%s", self.what, self._replicas)
        else:
            self._take(obj)

    def _take(self, statefulset: dict[str, Any]) -> None:
        """Remember spec.replicas (absent means the API default, 1); log a change once."""
        declared = (statefulset.get("spec") or {}).get("replicas", 1)
        if isinstance(declared, bool) or not isinstance(declared, int):
            raise ValueError(f"{self.what}: spec.replicas is {declared!r}")
        if declared < 1 and declared != self._declared:
            log.warning("%s: spec.replicas=%d; this shard still runs, so N=1", self.what, declared)
        self._declared = declared
        value = max(1, declared)
        if value != self._replicas:
            log.info("%s: replicas %s -> %d", self.what, self._replicas, value)
        self._replicas = value
