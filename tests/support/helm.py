"""Render the chart with the real `helm` binary (installed into .tools/ by `make tools`)."""

from __future__ import annotations

import functools
import subprocess
from typing import Any

import yaml

from tests.support.paths import ROOT, TOOLS_BIN

CHART = ROOT / "charts" / "simsearch"
HELM = TOOLS_BIN / "helm"
SCENARIOS = sorted(CHART.glob("ci/*-values.yaml"))
RELEASE = "demo"
NAMESPACE = "search"
# The workload that runs each serving role, by kind and name suffix.
WORKLOADS = {
    "shard": ("StatefulSet", "-shard"),
    "router": ("Deployment", "-router"),
    "embedder": ("Deployment", "-embedder"),
}


def chart_metadata() -> dict[str, Any]:
    """Chart.yaml: its appVersion is the release every image must say."""
    data: dict[str, Any] = yaml.safe_load((CHART / "Chart.yaml").read_text())
    return data


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    """Run helm; a missing binary is an error that says how to get it (never a skip)."""
    if not HELM.exists():
        raise FileNotFoundError(f"{HELM} is missing: run `make tools` (make test does)")
    return subprocess.run(
        [str(HELM), *args], capture_output=True, text=True, timeout=120, check=False
    )


def template_text(*args: str, release: str = RELEASE) -> str:
    """`helm template` output; fails the test with helm's message when rendering fails."""
    done = helm("template", release, str(CHART), "--namespace", NAMESPACE, *args)
    if done.returncode != 0:
        raise AssertionError(f"helm template {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


@functools.cache
def render(values_file: str | None = None, *sets: str) -> tuple[dict[str, Any], ...]:
    """The rendered objects (hooks and test pods included) of one scenario."""
    args = ["-f", values_file] if values_file else []
    for item in sets:
        args += ["--set", item]
    return tuple(d for d in yaml.safe_load_all(template_text(*args)) if d)


def pod_specs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod spec(s) inside a workload object (none for other kinds)."""
    kind = obj["kind"]
    if kind == "Pod":
        return [obj["spec"]]
    if kind in ("Deployment", "StatefulSet", "Job", "DaemonSet", "ReplicaSet"):
        return [obj["spec"]["template"]["spec"]]
    if kind == "CronJob":
        return [obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]]
    return []


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Every container of a pod spec, init containers included."""
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def find(objects: tuple[dict[str, Any], ...], kind: str, suffix: str) -> dict[str, Any]:
    """The one object of `kind` whose name ends with `-suffix`."""
    hits = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(suffix)]
    assert len(hits) == 1, f"{len(hits)} {kind} objects named *{suffix}"
    return hits[0]


def role_workload(role: str, objects: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """The StatefulSet or Deployment of a serving role."""
    return find(objects, *WORKLOADS[role])


def role_container(role: str, objects: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """The main container of a serving role's pods."""
    return containers(pod_specs(role_workload(role, objects))[0])[0]


def resolved_env(container: dict[str, Any], pod_name: str) -> dict[str, str]:
    """The container's environment as the kubelet would set it (secrets: placeholders)."""
    env = {}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        source = item["valueFrom"]
        if "fieldRef" in source:
            field = source["fieldRef"]["fieldPath"]
            env[item["name"]] = {"metadata.name": pod_name, "metadata.namespace": NAMESPACE}[field]
        else:
            env[item["name"]] = "secret-from-" + source["secretKeyRef"]["name"]
    return env
