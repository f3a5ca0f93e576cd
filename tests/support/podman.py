"""Run the project's images with podman the way the chart's pods run them.

`security_flags` turns a rendered container's `securityContext` into podman flags, key by
key, and refuses a key it does not know, so a chart change that this translation would
silently drop fails the image test instead. Volumes are host folders made like a
kubelet's emptyDir (mode 0777), one per `volumeMount`; everything else stays read-only.

Two podman details matter here:

* `--read-only` alone still gives the container writable tmpfs mounts on /tmp, /var/tmp
  and /run (`--read-only-tmpfs` defaults to true); a pod has no such thing, so the flag
  is turned off and only the declared volumes are writable;
* this machine's default OCI runtime (crun) cannot start containers inside its own
  sandbox (cgroups in hybrid mode), runc can; the open-file and process limits are set
  explicitly, as the host's exceed what a container may raise them to.
"""

from __future__ import annotations

import json
import os
import subprocess
import tomllib
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.paths import ROOT

PODMAN = ["podman", "--runtime", "runc"]
# What the runtime mounts over the image itself, as a kubelet does (not in `Mounts`).
RUNTIME_FILES = ("/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/run/.containerenv")
LIMITS = ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"]


def podman(*args: str, timeout_s: float = 120, check: bool = True) -> str:
    """One podman command's standard output; its error output in the failure."""
    done = subprocess.run(
        [*PODMAN, *args], capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args[:3])}… exited {done.returncode}:\n{done.stderr}")
    return done.stdout


def security_flags(context: Mapping[str, Any]) -> list[str]:
    """The podman flags that apply a container `securityContext` (restricted profile)."""
    flags: list[str] = []
    for key, value in context.items():
        if key == "readOnlyRootFilesystem":
            flags += ["--read-only", "--read-only-tmpfs=false"] if value else []
        elif key == "runAsNonRoot":
            if value and context.get("runAsUser", 0) == 0:
                raise ValueError("runAsNonRoot without a non-zero runAsUser")
        elif key in ("runAsUser", "runAsGroup"):
            pass  # together below
        elif key == "allowPrivilegeEscalation":
            flags += [] if value else ["--security-opt", "no-new-privileges"]
        elif key == "capabilities":
            flags += [f"--cap-drop={cap}" for cap in value.get("drop", [])]
            flags += [f"--cap-add={cap}" for cap in value.get("add", [])]
        elif key == "seccompProfile":
            if value.get("type") != "RuntimeDefault":
                raise ValueError(f"seccomp profile {value} has no podman translation here")
            # podman's default seccomp profile is the runtime default
        else:
            raise ValueError(f"securityContext.{key} has no podman translation here")
    if "runAsUser" in context:
        flags += ["--user", f"{context['runAsUser']}:{context.get('runAsGroup', 0)}"]
    return flags


@dataclass
class Container:
    """A started container: its name and the URL it serves."""

    name: str
    url: str

    def logs(self) -> str:
        return podman("logs", self.name, check=False)

    def exec(self, *command: str) -> str:
        """A command inside the running container, as its own user."""
        return podman("exec", self.name, *command)

    def inspect(self) -> dict[str, Any]:
        data: list[dict[str, Any]] = json.loads(podman("inspect", self.name))
        return data[0]

    def changed_paths(self) -> list[str]:
        """What the container changed outside its volumes (`podman diff`), less the mount
        points podman itself made for them and for its own files (a destination and the
        folders above it: `/etc` changes when the image has no `/etc/hostname`)."""
        data = json.loads(podman("diff", "--format", "json", self.name) or "{}")
        mounts = [m["Destination"] for m in self.inspect()["Mounts"]] + list(RUNTIME_FILES)
        made = {str(p) for dst in mounts for p in (Path(dst), *Path(dst).parents)}
        changed = {p for kind in ("added", "changed", "deleted") for p in data.get(kind) or []}
        return sorted(changed - made)


def volume_flags(mounts: list[dict[str, Any]], root: Path) -> list[str]:
    """One fresh world-writable host folder (an emptyDir) per volumeMount."""
    flags = []
    for mount in mounts:
        folder = root / mount["name"]
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o777)
        flags += ["--mount", f"type=bind,src={folder},dst={mount['mountPath']}"]
    return flags


@contextmanager
def running(
    image: str,
    args: list[str],
    env: Mapping[str, str],
    flags: list[str],
    port: int,
    role: str,
) -> Iterator[Container]:
    """`podman run -d` on the host network; removed (with its copy of the image) at exit."""
    name = f"simsearch-test-{role}-{uuid.uuid4().hex[:8]}"
    env_flags = [flag for k, v in env.items() for flag in ("--env", f"{k}={v}")]
    podman(
        "run", "--detach", "--name", name, "--network", "host", *LIMITS, *flags, *env_flags,
        image, *args,
        timeout_s=300,
    )  # fmt: skip
    try:
        yield Container(name, f"http://127.0.0.1:{port}")
    finally:
        podman("rm", "--force", "--time", "5", name, check=False, timeout_s=120)


def image_labels(image: str) -> dict[str, str]:
    data: list[dict[str, Any]] = json.loads(podman("image", "inspect", image))
    labels: dict[str, str] = data[0].get("Labels") or {}
    return labels


def image_size(image: str) -> int:
    return int(podman("image", "inspect", "--format", "{{.Size}}", image).strip())


def build_images(targets: tuple[str, ...], timeout_s: float, **env: str) -> dict[str, str]:
    """Role → the tag `scripts/build-images.sh` just built for it from this checkout (its
    layer cache rebuilds only what changed); its table of times and sizes is printed, and a
    failed build fails with the script's output."""
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-images.sh")],
        cwd=ROOT, env={**os.environ, **env, "TARGETS": " ".join(targets)},
        capture_output=True, text=True, timeout=timeout_s, check=False,
    )  # fmt: skip
    print(done.stdout)
    assert done.returncode == 0, f"build-images.sh failed:\n{done.stdout[-3000:]}{done.stderr}"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {role: f"localhost/simsearch-{role}:{project['version']}" for role in targets}
