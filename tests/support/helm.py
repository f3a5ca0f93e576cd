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
