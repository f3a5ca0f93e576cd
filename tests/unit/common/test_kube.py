"""The Kubernetes topology (shard) and discovery (router) against a fake API server.

The official client talks real HTTP to `tests/support/kubeapi.py`, which keeps an event
history like etcd, so resumed watches, 410 Gone, cut connections and an unreachable API
are all exercised for real. Every wait polls a condition with a deadline (no sleeps).
The last tests tie the code to the chart: the calls made are exactly what its Roles grant.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes.config import kube_config

import simsearch.common.kube as common_kube
from simsearch.common.errors import ConfigError, TopologyUnknown
from simsearch.common.kube import default_api_client
from simsearch.router.discovery import make_source
from simsearch.router.kube import KubernetesSource
from simsearch.router.registry import ShardRegistry
from simsearch.router.settings import RouterSettings
from simsearch.shard.app import build_topology, close_topology
from simsearch.shard.kube import KubernetesTopology
from simsearch.shard.settings import ShardSettings
from tests.support.helm import find, render
from tests.support.kubeapi import SLICES, STS, Endpoint, FakeKubeApi

T = TypeVar("T")
NS = "search"
STS_NAME = "demo-simsearch-shard"
SERVICE = "demo-simsearch-shard"
STS_PATH = STS.format(ns=NS)
SLICES_PATH = SLICES.format(ns=NS)
SELECTOR = f"kubernetes.io/service-name={SERVICE}"


def eventually(check: Callable[[], T], what: str, timeout_s: float = 10.0) -> T:
    """The first truthy result of `check`, polled until the deadline; fails saying `what`."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except TopologyUnknown as err:
            last = err
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout_s} s: {what} (last: {last!r})")


@pytest.fixture
def kube() -> Iterator[FakeKubeApi]:
    with FakeKubeApi(NS) as api:
        yield api


@pytest.fixture
def topology(kube: FakeKubeApi) -> Iterator[Callable[..., KubernetesTopology]]:
    """Builds topologies on the fake API; closes them after the test."""
    made: list[KubernetesTopology] = []

    def make(**options: Any) -> KubernetesTopology:
        options.setdefault("first_wait_s", 5.0)
        made.append(KubernetesTopology(STS_NAME, NS, kube.client(), **options))
        return made[-1]

    yield make
    for each in made:
        each.close()


@pytest.fixture
def source(kube: FakeKubeApi) -> Iterator[Callable[..., KubernetesSource]]:
    """Builds discovery sources on the fake API; closes them after the test."""
    made: list[KubernetesSource] = []

    def make(**options: Any) -> KubernetesSource:
        options.setdefault("first_wait_s", 5.0)
        made.append(KubernetesSource(SERVICE, NS, 8002, "http", kube.client(), **options))
        return made[-1]

    yield make
    for each in made:
        each.close()


def gets(kube: FakeKubeApi) -> int:
    return kube.count(f"{STS_PATH}/{STS_NAME}")


def watches(kube: FakeKubeApi, path: str = STS_PATH) -> int:
    return kube.count(path, watch=True)


def urls(src: KubernetesSource) -> list[str]:
    return asyncio.run(src.urls())


# ---- shard: KubernetesTopology


def test_topology_reads_the_initial_replicas(
    kube: FakeKubeApi, topology: Callable[..., KubernetesTopology]
) -> None:
    kube.set_statefulset(STS_NAME, 3)
    topo = topology()
    assert topo.replicas() == 3  # the first call waits for the initial get
    assert topo.describe() == f"kubernetes({NS}/{STS_NAME})"


def test_topology_follows_a_scale_without_reading_again(
    kube: FakeKubeApi, topology: Callable[..., KubernetesTopology], caplog: pytest.LogCaptureFixture
) -> None:
    kube.set_statefulset(STS_NAME, 2)
    topo = topology()
    assert topo.replicas() == 2
    with caplog.at_level(logging.INFO, logger="simsearch.shard.kube"):
        for n in (4, 1):
            kube.set_statefulset(STS_NAME, n)

            def scaled(n: int = n) -> bool:
                return topo.replicas() == n

            eventually(scaled, f"replicas {n}")
    assert gets(kube) == 1  # the watch carried both changes
    assert "replicas 2 -> 4" in caplog.text
    assert "replicas 4 -> 1" in caplog.text


def test_a_statefulset_scaled_to_zero_still_counts_this_shard(
    kube: FakeKubeApi, topology: Callable[..., KubernetesTopology], caplog: pytest.LogCaptureFixture
) -> None:
    kube.set_statefulset(STS_NAME, 3)
    topo = topology()
    assert topo.replicas() == 3
    with caplog.at_level(logging.WARNING, logger="simsearch.shard.kube"):
        kube.set_statefulset(STS_NAME, 0)
        eventually(lambda: topo.replicas() == 1, "replicas 1")
    assert "spec.replicas=0" in caplog.text


def test_topology_is_unknown_until_the_statefulset_can_be_read(
    kube: FakeKubeApi, topology: Callable[..., KubernetesTopology]
) -> None:
    topo = topology()  # no such StatefulSet yet: 404
    with pytest.raises(TopologyUnknown, match="404"):
        topo.replicas()
    kube.set_statefulset(STS_NAME, 2)
    eventually(lambda: topo.replicas() == 2, "replicas 2 once it exists")


def test_topology_survives_a_dropped_watch(
    kube: FakeKubeApi, topology: Callable[..., KubernetesTopology]
) -> None:
    kube.set_statefulset(STS_NAME, 2)
    topo = topology()
    assert topo.replicas() == 2
    eventually(lambda: kube.open_watches == 1, "a watch open")
    kube.drop_watches()
    kube.set_statefulset(STS_NAME, 5)
    eventually(lambda: topo.replicas() == 5, "replicas 5 after the drop")
    assert watches(kube) >= 2
    assert gets(kube) == 1  # resumed from the last resourceVersion, no new get


def test_topology_watches_again_when_the_server_ends_the_watch(
    kube: FakeKubeApi, topology: Callable[..., KubernetesTopology]
) -> None:
    kube.set_statefulset(STS_NAME, 2)
    topo = topology(watch_timeout_s=1)
    assert topo.replicas() == 2
    eventually(lambda: watches(kube) >= 3, "the watch renewed after timeoutSeconds")
    kube.set_statefulset(STS_NAME, 3)
    eventually(lambda: topo.replicas() == 3, "replicas 3")
    assert gets(kube) == 1


@pytest.mark.parametrize("how", ["http", "event"])
def test_topology_reads_again_after_410_gone(
    kube: FakeKubeApi, topology: Callable[..., KubernetesTopology], how: Any
) -> None:
    kube.set_statefulset(STS_NAME, 2)
    topo = topology()
    assert topo.replicas() == 2
    eventually(lambda: kube.open_watches == 1, "a watch open")
    kube.expire_next_watch(how)
    kube.drop_watches()  # the next watch is the one that hears 410
    kube.set_statefulset(STS_NAME, 6)
    eventually(lambda: topo.replicas() == 6, "replicas 6 after the re-get")
    assert gets(kube) == 2


@pytest.mark.parametrize("how", ["503", "close"])
def test_topology_keeps_its_value_while_the_api_is_unreachable(
    kube: FakeKubeApi, topology: Callable[..., KubernetesTopology], how: Any
) -> None:
    kube.set_statefulset(STS_NAME, 2)
    topo = topology()
    assert topo.replicas() == 2
    eventually(lambda: kube.open_watches == 1, "a watch open")
    before = len(kube.calls)
    kube.refuse(how)
    eventually(lambda: len(kube.calls) >= before + 3, "three refused tries")
    kube.set_statefulset(STS_NAME, 7)  # changed while the shard cannot see it
    assert topo.replicas() == 2
    assert topo.problem is not None
    kube.refuse(None)
    eventually(lambda: topo.replicas() == 7, "replicas 7 once the API is back")
    eventually(lambda: topo.problem is None, "the problem cleared")


def test_close_stops_the_watch_thread(
    kube: FakeKubeApi, topology: Callable[..., KubernetesTopology]
) -> None:
    kube.set_statefulset(STS_NAME, 2)
    topo = topology()
    assert topo.replicas() == 2
    eventually(lambda: kube.open_watches == 1, "a watch open")
    topo.close()
    assert not [t for t in threading.enumerate() if t.name == f"kube {topo.what}"]
    eventually(lambda: kube.open_watches == 0, "the watch connection closed")


def test_namespace_defaults_to_the_pods_own(
    kube: FakeKubeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kube.set_statefulset(STS_NAME, 2)
    (tmp_path / "namespace").write_text(f"{NS}\n")
    monkeypatch.setattr(common_kube, "NAMESPACE_FILE", tmp_path / "namespace")
    topo = KubernetesTopology(STS_NAME, None, kube.client(), first_wait_s=5.0)
    try:
        assert topo.replicas() == 2
    finally:
        topo.close()
    monkeypatch.setattr(common_kube, "NAMESPACE_FILE", tmp_path / "missing")
    with pytest.raises(ConfigError, match="SIMSEARCH_NAMESPACE"):
        KubernetesTopology(STS_NAME, None, kube.client())


def test_no_cluster_and_no_kubeconfig_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(tmp_path / "none"))
    with pytest.raises(ConfigError, match="no Kubernetes API"):
        default_api_client()


def test_without_a_service_account_the_kubeconfig_is_used(
    kube: FakeKubeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kube.set_statefulset(STS_NAME, 3)
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        f"""
apiVersion: v1
kind: Config
clusters: [{{name: fake, cluster: {{server: "{kube.url}"}}}}]
users: [{{name: dev, user: {{}}}}]
contexts: [{{name: fake, context: {{cluster: fake, user: dev}}}}]
current-context: fake
"""
    )
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
    topo = KubernetesTopology(STS_NAME, NS, first_wait_s=5.0)
    try:
        assert topo.replicas() == 3
        assert topo.api.configuration.retries == 0  # retried by the topology, not urllib3
    finally:
        topo.close()


def test_build_topology_wires_the_kubernetes_source(
    kube: FakeKubeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    kube.set_statefulset(STS_NAME, 4)
    monkeypatch.setattr(common_kube, "default_api_client", kube.client)
    settings = ShardSettings(
        store="file:///nowhere",
        shard_ordinal=1,
        topology="kubernetes",
        namespace=NS,
        statefulset=STS_NAME,
    )
    topo = build_topology(settings)
    try:
        assert isinstance(topo, KubernetesTopology)
        assert topo.replicas() == 4
    finally:
        close_topology(topo)
    eventually(lambda: kube.open_watches == 0, "the watch closed with the topology")


# ---- router: KubernetesSource


def shards(*ordinals: int, ready: bool = True) -> list[Endpoint]:
    return [Endpoint(f"10.0.0.{n + 10}", f"{STS_NAME}-{n}", ready=ready) for n in ordinals]


def test_discovery_lists_ready_and_not_ready_endpoints_but_not_stopped_ones(
    kube: FakeKubeApi, source: Callable[..., KubernetesSource]
) -> None:
    kube.set_endpoints(
        "shard-a",
        SERVICE,
        [
            *shards(0),
            *shards(1, ready=False),
            Endpoint("10.0.0.13", f"{STS_NAME}-3", ready=False, terminating=True),
            Endpoint("", f"{STS_NAME}-4"),  # no address yet
        ],
    )
    kube.set_endpoints("shard-b", SERVICE, shards(2))
    kube.set_endpoints("other", "another-service", shards(7))
    src = source()
    assert urls(src) == ["http://10.0.0.10:8002", "http://10.0.0.11:8002", "http://10.0.0.12:8002"]
    assert src.ordinals() == {
        "http://10.0.0.10:8002": 0,
        "http://10.0.0.11:8002": 1,
        "http://10.0.0.12:8002": 2,
    }


def test_discovery_follows_endpoints_coming_and_going(
    kube: FakeKubeApi, source: Callable[..., KubernetesSource]
) -> None:
    kube.set_endpoints("shard-a", SERVICE, shards(0))
    src = source()
    assert urls(src) == ["http://10.0.0.10:8002"]
    kube.set_endpoints("shard-a", SERVICE, shards(0, 1))
    eventually(lambda: len(urls(src)) == 2, "a second shard")
    kube.set_endpoints("shard-b", SERVICE, shards(2))
    eventually(lambda: len(urls(src)) == 3, "a third shard in a new slice")
    kube.set_endpoints(
        "shard-a",
        SERVICE,
        [*shards(0, 5), Endpoint("10.0.0.11", f"{STS_NAME}-1", terminating=True)],
    )
    eventually(lambda: "http://10.0.0.15:8002" in urls(src), "the same update's new shard")
    assert "http://10.0.0.11:8002" in urls(src)  # draining (still serving): kept
    kube.set_endpoints(
        "shard-a",
        SERVICE,
        [*shards(0), Endpoint("10.0.0.11", f"{STS_NAME}-1", ready=False, terminating=True)],
    )
    eventually(lambda: "http://10.0.0.11:8002" not in urls(src), "the stopped shard gone")
    kube.delete("endpointslices", "shard-b")
    eventually(lambda: urls(src) == ["http://10.0.0.10:8002"], "only shard 0 left")
    kube.set_endpoints("shard-a", SERVICE, [])  # sent as endpoints: null
    eventually(lambda: urls(src) == [] or None, "no shard at all")
    assert kube.count(SLICES_PATH, watch=False, labelSelector=SELECTOR) == 1


def test_discovery_ports_ipv6_and_dual_stack(
    kube: FakeKubeApi, source: Callable[..., KubernetesSource]
) -> None:
    kube.set_endpoints("v4", SERVICE, shards(0, 1), port=9000)
    kube.set_endpoints(
        "v6",
        SERVICE,
        [Endpoint("fd00::10", f"{STS_NAME}-0"), Endpoint("fd00::12", f"{STS_NAME}-2")],
        port=None,
        address_type="IPv6",
    )
    kube.set_endpoints("names", SERVICE, [Endpoint("shard.example", None)], address_type="FQDN")
    src = source()
    # pod 0 is in both families: its IPv4 address wins; pod 2 has only IPv6 (default port)
    assert urls(src) == ["http://10.0.0.10:9000", "http://10.0.0.11:9000", "http://[fd00::12]:8002"]
    assert src.ordinals()["http://[fd00::12]:8002"] == 2


@pytest.mark.parametrize("how", ["http", "event"])
def test_discovery_lists_again_after_410_gone(
    kube: FakeKubeApi, source: Callable[..., KubernetesSource], how: Any
) -> None:
    kube.set_endpoints("shard-a", SERVICE, shards(0))
    src = source()
    assert len(urls(src)) == 1
    eventually(lambda: kube.open_watches == 1, "a watch open")
    kube.expire_next_watch(how)
    kube.drop_watches()
    kube.set_endpoints("shard-a", SERVICE, shards(0, 1))
    eventually(lambda: len(urls(src)) == 2, "two shards after the new list")
    lists = kube.count(SLICES_PATH, watch=False, labelSelector=SELECTOR)
    assert lists == 2


def test_discovery_survives_a_dropped_watch(
    kube: FakeKubeApi, source: Callable[..., KubernetesSource]
) -> None:
    kube.set_endpoints("shard-a", SERVICE, shards(0, 1))
    src = source()
    assert len(urls(src)) == 2
    eventually(lambda: kube.open_watches == 1, "a watch open")
    kube.drop_watches()
    kube.set_endpoints("shard-a", SERVICE, shards(0))
    eventually(lambda: urls(src) == ["http://10.0.0.10:8002"], "the change after reconnecting")
    assert kube.count(SLICES_PATH, watch=False) == 1  # resumed, not listed again


@pytest.mark.parametrize("how", ["503", "close"])
def test_discovery_keeps_its_list_while_the_api_is_unreachable(
    kube: FakeKubeApi, source: Callable[..., KubernetesSource], how: Any
) -> None:
    kube.set_endpoints("shard-a", SERVICE, shards(0, 1))
    src = source()
    assert len(urls(src)) == 2
    eventually(lambda: kube.open_watches == 1, "a watch open")
    before = len(kube.calls)
    kube.refuse(how)
    eventually(lambda: len(kube.calls) >= before + 3, "three refused tries")
    kube.set_endpoints("shard-a", SERVICE, shards(0))  # unseen while refusing
    assert len(urls(src)) == 2
    assert src.problem is not None
    kube.refuse(None)
    eventually(lambda: urls(src) == ["http://10.0.0.10:8002"], "the change once it is back")


def test_make_source_wires_kubernetes_discovery_and_the_registry_closes_it(
    kube: FakeKubeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    kube.set_endpoints("shard-a", SERVICE, shards(0))
    monkeypatch.setattr(common_kube, "default_api_client", kube.client)
    settings = RouterSettings(discovery="kubernetes", shards_service=SERVICE, namespace=NS)
    src = make_source(settings)
    assert isinstance(src, KubernetesSource)

    async def run() -> list[str]:
        found = await src.urls()
        upstream: Any = None  # stop() only closes the source
        await ShardRegistry(src, upstream, 1.0, 1.0).stop()
        return found

    assert asyncio.run(run()) == ["http://10.0.0.10:8002"]
    eventually(lambda: kube.open_watches == 0, "the watch closed with the registry")


# ---- least privilege: the calls made, and what the chart grants


def test_the_shard_only_gets_and_watches_its_own_statefulset(
    kube: FakeKubeApi, topology: Callable[..., KubernetesTopology]
) -> None:
    kube.set_statefulset(STS_NAME, 2)
    topo = topology()
    assert topo.replicas() == 2
    eventually(lambda: kube.open_watches == 1, "a watch open")
    kube.expire_next_watch("http")
    kube.drop_watches()
    kube.set_statefulset(STS_NAME, 3)
    eventually(lambda: topo.replicas() == 3, "replicas 3")
    for call in kube.calls:
        assert call.method == "GET", call
        if call.path == f"{STS_PATH}/{STS_NAME}":
            assert not call.watching, call
        else:
            assert call.path == STS_PATH, call
            assert call.watching, call  # never a plain list
            assert call.query["fieldSelector"] == f"metadata.name={STS_NAME}", call
            assert call.query["resourceVersion"], call
    assert gets(kube) == 2 and watches(kube) >= 2


def test_the_router_only_lists_and_watches_the_services_endpointslices(
    kube: FakeKubeApi, source: Callable[..., KubernetesSource]
) -> None:
    kube.set_endpoints("shard-a", SERVICE, shards(0))
    src = source()
    assert len(urls(src)) == 1
    eventually(lambda: kube.open_watches == 1, "a watch open")
    kube.expire_next_watch("event")
    kube.drop_watches()
    kube.set_endpoints("shard-a", SERVICE, shards(0, 1))
    eventually(lambda: len(urls(src)) == 2, "two shards")
    for call in kube.calls:
        assert (call.method, call.path) == ("GET", SLICES_PATH), call
        assert call.query["labelSelector"] == SELECTOR, call
        assert "fieldSelector" not in call.query, call
        if call.watching:
            assert call.query["resourceVersion"], call
    assert watches(kube, SLICES_PATH) >= 2


def test_the_chart_grants_exactly_these_verbs() -> None:
    objects = render(None)
    shard_role = find(objects, "Role", "-shard")
    statefulset = find(objects, "StatefulSet", "-shard")
    assert shard_role["rules"] == [
        {
            "apiGroups": ["apps"],
            "resources": ["statefulsets"],
            "resourceNames": [statefulset["metadata"]["name"]],
            "verbs": ["get", "watch"],
        }
    ]
    router_role = find(objects, "Role", "-router")
    assert router_role["rules"] == [
        {
            "apiGroups": ["discovery.k8s.io"],
            "resources": ["endpointslices"],
            "verbs": ["list", "watch"],
        }
    ]
    # and the names the code is told to watch are the chart's own objects
    shard_env = _env(statefulset)
    assert shard_env["SIMSEARCH_TOPOLOGY"] == "kubernetes"
    assert shard_env["SIMSEARCH_STATEFULSET"] == statefulset["metadata"]["name"]
    router_env = _env(find(objects, "Deployment", "-router"))
    service = find(objects, "Service", "-shard")
    assert router_env["SIMSEARCH_DISCOVERY"] == "kubernetes"
    assert router_env["SIMSEARCH_SHARDS_SERVICE"] == service["metadata"]["name"]
    assert "http" in [p.get("name") for p in service["spec"]["ports"]]


def _env(workload: dict[str, Any]) -> dict[str, str]:
    """The literal env values of a workload's main container."""
    container = workload["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
