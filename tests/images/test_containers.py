"""The real images, run as the chart runs them, answer what the process cluster answers.

The router and two shard images (built from this checkout by the `images` fixture) start
under podman with the environment, arguments, securityContext and volumes the chart
renders for their pods (`helm template`, default values): read-only root, uid 10001, no
capabilities, no privilege escalation, writable only where a volume is mounted. Topology
and discovery stay the chart's (`kubernetes`): a fake API server in this process
(`tests/support/kubeapi.py`) holds the shard StatefulSet and one EndpointSlice per shard,
and a kubeconfig mounted read-only points the official client at it.

What a pod would get from Kubernetes and this machine cannot give is overridden, and only
that (`CLUSTER_OVERRIDES`): the port (all containers share the host's network, so each
gets its own), the S3 endpoint and credentials (moto on loopback instead of the cloud's
instance role) and the API server's address. The same index, in the bucket the chart
names, is then served by `simsearch serve` processes with static topology, and a search
must give the same neighbours with the same scores through both.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from simsearch.common.manifest import ModelInfo
from simsearch.indexer.writer import write_index
from tests.support.cluster import spawn
from tests.support.helm import chart_metadata, render, resolved_env, role_container, role_workload
from tests.support.kubeapi import Endpoint, FakeKubeApi
from tests.support.motoindex import moto_layout
from tests.support.podman import Container, image_labels, running, security_flags, volume_flags
from tests.support.procs import Service, wait_for, wait_ready
from tests.support.s3server import AWS, free_port, stop_process

# the first build on a fresh machine (apt, debootstrap, two targets) takes ~5 minutes
pytestmark = [pytest.mark.images, pytest.mark.integration, pytest.mark.timeout(1800)]

N, DIM, P, K, SHARDS = 2000, 64, 4, 10, 2
START_LIMIT_S = 60.0  # podman run → /health/ready (3–10 s measured here, vfs storage)
START_WAIT_S = 3 * START_LIMIT_S  # how long a slow start is waited for, to be measured
KUBECONFIG = "/etc/simsearch-test/kubeconfig"
CLUSTER_OVERRIDES = ("SIMSEARCH_PORT", "SIMSEARCH_S3_ENDPOINT_URL", "KUBECONFIG", *AWS)


@dataclass
class Deployment:
    """The containers, the process cluster beside them, and what the test measured."""

    router: Container
    shards: list[Container]
    processes: Service  # the process cluster's router
    start_s: dict[str, float]  # container name → seconds to ready
    volumes: dict[str, Path]  # container name → its volumes' host root
    app_version: str
    queries: np.ndarray


def chart_bucket(env: dict[str, str]) -> str:
    match = re.fullmatch(r"s3://([^/]+)/?", env["SIMSEARCH_STORE"])
    assert match, f"the chart's store {env['SIMSEARCH_STORE']} is not a bucket root"
    return match.group(1)


def write_chart_index(endpoint: str, bucket: str) -> None:
    """Random unit vectors, IVF with P partitions, at the root of the chart's bucket."""
    x = np.random.default_rng(5).standard_normal((N, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.arange(N, dtype=np.int64) * 31 + 7
    paths = [f"images/{i:05d}.jpg" for i in range(N)]
    with moto_layout(endpoint, bucket, prefix="") as layout:
        write_index(layout, ids, x, paths, ModelInfo(name="test", dim=DIM), partitions=P)


def kubeconfig(api_url: str, folder: Path) -> Path:
    path = folder / "kubeconfig"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": api_url}}],
        "users": [{"name": "pod", "user": {}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "pod"}}],
        "current-context": "fake",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o644)
    return path


def pod_flags(container: dict[str, Any], root: Path, config: Path) -> list[str]:
    return [
        *security_flags(container["securityContext"]),
        *volume_flags(container.get("volumeMounts", []), root),
        "--mount", f"type=bind,src={config},dst={KUBECONFIG},readonly=true",
    ]  # fmt: skip


def overrides(port: int, endpoint: str) -> dict[str, str]:
    return {
        "SIMSEARCH_PORT": str(port),
        "SIMSEARCH_S3_ENDPOINT_URL": endpoint,
        "KUBECONFIG": KUBECONFIG,
        **AWS,
    }


def ready_within(container: Container, started: float) -> float:
    """Seconds from `podman run` until `/health/ready` answers 200; fails with the logs
    if the container stops first or START_WAIT_S passes (a start slower than START_LIMIT_S
    is still measured, and fails a test of its own)."""
    deadline = started + START_WAIT_S
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if container.inspect()["State"]["Status"] in ("exited", "stopped"):
                raise AssertionError(f"{container.name} stopped:\n{container.logs()[-4000:]}")
            try:
                if client.get(f"{container.url}/health/ready").status_code == 200:
                    return time.monotonic() - started
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    raise AssertionError(
        f"{container.name} not ready in {START_WAIT_S} s:\n{container.logs()[-4000:]}"
    )


def process_cluster(stack: ExitStack, endpoint: str, bucket: str, root: Path) -> Service:
    """The same index served by `simsearch serve` processes (static topology)."""
    shards = []
    for ordinal in range(SHARDS):
        env = {
            "SIMSEARCH_STORE": f"s3://{bucket}",
            "SIMSEARCH_S3_ENDPOINT_URL": endpoint,
            "SIMSEARCH_SHARD_ORDINAL": str(ordinal),
            "SIMSEARCH_REPLICAS": str(SHARDS),
            "SIMSEARCH_CACHE_DIR": str(root / f"process-cache-{ordinal}"),
        }
        shard = spawn("shard", env)
        stack.callback(stop_process, shard.process)
        shards.append(shard)
    for shard in shards:
        wait_ready(shard, "/health/ready", 90)
    router_env = {
        "SIMSEARCH_SHARDS": ",".join(s.url for s in shards),
        "SIMSEARCH_STORE": f"s3://{bucket}",
        "SIMSEARCH_S3_ENDPOINT_URL": endpoint,
    }
    router = spawn("router", router_env)
    stack.callback(stop_process, router.process)
    wait_ready(router, "/health/ready", 60)
    return router


def start_shards(
    stack: ExitStack, images: dict[str, str], objects: tuple[dict[str, Any], ...],
    kube: FakeKubeApi, service: str, endpoint: str, root: Path, config: Path,
) -> tuple[list[Container], dict[str, float]]:  # fmt: skip
    """Both shard pods of the StatefulSet, each with its EndpointSlice."""
    container = role_container("shard", objects)
    statefulset = role_workload("shard", objects)["metadata"]["name"]
    env0 = resolved_env(container, f"{statefulset}-0")
    kube.set_statefulset(env0["SIMSEARCH_STATEFULSET"], SHARDS)
    shards, started = [], []
    for ordinal in range(SHARDS):
        pod, port = f"{statefulset}-{ordinal}", free_port()
        env = {**resolved_env(container, pod), **overrides(port, endpoint)}
        kube.set_endpoints(pod, service, [Endpoint("127.0.0.1", pod)], port=port)
        flags = pod_flags(container, root / pod, config)
        started.append(time.monotonic())
        shards.append(
            stack.enter_context(running(images["shard"], container["args"], env, flags, port, pod))
        )
    return shards, {s.name: ready_within(s, t) for s, t in zip(shards, started, strict=True)}


@pytest.fixture(scope="module")
def deployed(
    images: dict[str, str], s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("images")
    objects = render()
    router_container = role_container("router", objects)
    router_env = resolved_env(router_container, "demo-simsearch-router-0")
    bucket = chart_bucket(router_env)
    write_chart_index(s3_endpoint, bucket)
    app_version = chart_metadata()["appVersion"]
    with ExitStack() as stack, FakeKubeApi(router_env["SIMSEARCH_NAMESPACE"]) as kube:
        config = kubeconfig(kube.url, root)
        service = router_env["SIMSEARCH_SHARDS_SERVICE"]
        shards, start_s = start_shards(
            stack, images, objects, kube, service, s3_endpoint, root, config
        )
        port = free_port()
        started = time.monotonic()
        router = stack.enter_context(
            running(
                images["router"], router_container["args"],
                {**router_env, **overrides(port, s3_endpoint)},
                pod_flags(router_container, root / "router", config), port, "router",
            )
        )  # fmt: skip
        start_s[router.name] = ready_within(router, started)
        processes = process_cluster(stack, s3_endpoint, bucket, root)
        queries = np.random.default_rng(9).standard_normal((20, DIM)).astype(np.float32)
        volumes = {s.name: root / f"demo-simsearch-shard-{i}" for i, s in enumerate(shards)}
        volumes[router.name] = root / "router"
        print(f"\nimage test: seconds from podman run to ready: {json.dumps(start_s)}")
        yield Deployment(router, shards, processes, start_s, volumes, app_version, queries)


def search(url: str, queries: np.ndarray) -> dict[str, Any]:
    body = {"vectors": queries.tolist(), "k": K}
    response = httpx.post(f"{url}/search/vector", json=body, timeout=30)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_containers_answer_the_search_the_processes_answer(deployed: Deployment) -> None:
    wait_for(
        lambda: not search(deployed.router.url, deployed.queries[:1])["partial"],
        60,
        "the container router covering every partition",
    )
    containers = search(deployed.router.url, deployed.queries)
    processes = search(deployed.processes.url, deployed.queries)
    assert not containers["partial"] and not processes["partial"]
    assert len(containers["results"]) == len(deployed.queries)
    for got, want in zip(containers["results"], processes["results"], strict=True):
        assert [(h["id"], h["path"]) for h in got] == [(h["id"], h["path"]) for h in want]
        assert len(got) == K
        np.testing.assert_allclose(
            [h["similarity_score"] for h in got],
            [h["similarity_score"] for h in want],
            rtol=0,
            atol=1e-5,
        )


def test_every_container_starts_within_the_stated_time(deployed: Deployment) -> None:
    slow = {name: s for name, s in deployed.start_s.items() if s > START_LIMIT_S}
    assert not slow, f"slower than {START_LIMIT_S} s to ready: {slow}"


def proc_status(container: Container) -> dict[str, str]:
    pid = container.inspect()["State"]["Pid"]
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def test_containers_run_unprivileged_as_the_chart_says(deployed: Deployment) -> None:
    for container in [deployed.router, *deployed.shards]:
        status = proc_status(container)
        assert status["Uid"].split() == ["10001"] * 4, f"{container.name}: {status['Uid']}"
        assert status["Gid"].split() == ["10001"] * 4, f"{container.name}: {status['Gid']}"
        assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0, status
        assert status["NoNewPrivs"] == "1", f"{container.name} may gain privileges"
        assert container.inspect()["HostConfig"]["ReadonlyRootfs"] is True


def test_containers_write_only_to_their_volumes(deployed: Deployment) -> None:
    for container in [deployed.router, *deployed.shards]:
        assert container.changed_paths() == [], f"{container.name} wrote outside its volumes"
        probe = container.exec("sh", "-c", "touch /app/x 2>&1; touch /etc/x 2>&1; true")
        assert probe.count("Read-only file system") == 2, f"{container.name}: {probe}"
    for shard in deployed.shards:
        cache = deployed.volumes[shard.name] / "cache"
        assert any(cache.rglob("*")), f"{shard.name} keeps nothing in its cache volume"


def test_images_carry_the_charts_version_and_labels(
    deployed: Deployment, images: dict[str, str]
) -> None:
    for container in [deployed.router, *deployed.shards]:
        assert container.exec("simsearch", "--version").strip() == (
            f"simsearch {deployed.app_version}"
        )
    home = chart_metadata()["home"]
    for image in images.values():
        labels = image_labels(image)
        assert labels.get("org.opencontainers.image.version") == deployed.app_version, labels
        assert labels.get("org.opencontainers.image.licenses") == "Apache-2.0", labels
        assert labels.get("org.opencontainers.image.source") == home, labels


HYGIENE = """
import importlib.util, json, shutil
print(json.dumps({
    "tools": [t for t in ("gcc", "cc", "c++", "make", "ld", "git") if shutil.which(t)],
    "modules": [m for m in ("torch", "faiss", "h5py") if importlib.util.find_spec(m)],
}))
"""


def test_runtime_images_have_no_build_tools_and_only_their_roles_libraries(
    deployed: Deployment,
) -> None:
    allowed = {"router": set(), "shard": {"faiss", "h5py"}}
    for role, container in [("router", deployed.router), ("shard", deployed.shards[0])]:
        found = json.loads(container.exec("python3", "-c", HYGIENE))
        assert found["tools"] == [], f"{role} image has build tools: {found['tools']}"
        assert set(found["modules"]) == allowed[role], f"{role} image: {found['modules']}"
