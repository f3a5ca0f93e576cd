"""k8s/ holds the chart rendered with default values; a render that differs is drift."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import yaml

from tests.support.helm import helm
from tests.support.paths import ROOT, TOOLS_BIN

SCRIPT = ROOT / "scripts" / "render-k8s.py"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120
    )


def test_k8s_folder_matches_a_fresh_render() -> None:
    done = run("--check")
    assert done.returncode == 0, done.stdout + done.stderr


def test_drift_is_detected(tmp_path: Path) -> None:
    assert run("--out", str(tmp_path)).returncode == 0
    assert run("--check", "--out", str(tmp_path)).returncode == 0
    shard = tmp_path / "shard.yaml"
    shard.write_text(shard.read_text().replace("replicas: 2", "replicas: 3"))
    done = run("--check", "--out", str(tmp_path))
    assert done.returncode == 1 and "shard.yaml" in done.stdout


def test_kustomization_lists_every_file_and_the_objects_are_valid() -> None:
    folder = ROOT / "k8s"
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    files = {p.name for p in folder.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    for name in files:
        for obj in yaml.safe_load_all((folder / name).read_text()):
            if obj:
                kubernetes_validate.validate(obj, "1.30.0", strict=True)
    assert helm("version").returncode == 0


def test_kubectl_kustomize_builds_the_folder() -> None:
    """What `kubectl apply -k k8s/` would send, built by the real kubectl (no cluster)."""
    kubectl = TOOLS_BIN / "kubectl"
    done = subprocess.run(
        [str(kubectl), "kustomize", str(ROOT / "k8s")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    objects = [o for o in yaml.safe_load_all(done.stdout) if o]
    kinds = {o["kind"] for o in objects}
    assert {"Namespace", "StatefulSet", "Deployment", "Service", "Role"} <= kinds
    assert all(
        o["metadata"].get("namespace") == "simsearch" for o in objects if o["kind"] != "Namespace"
    )
