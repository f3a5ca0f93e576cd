"""`simsearch serve router` runs where only the `[router]` extra is installed.

The router image installs the package with its own extra and nothing else, so the CLI
must not reach faiss, h5py or torch on the way to the router (`cli.py` imports each
command's code only when it runs). This test builds that install for real: a fresh
virtual environment without system site-packages, `pip install .[router]` from a copy of
this checkout, and the router started from it with a static shard that does not exist.
It checks the other roles' dependencies are really absent there, so it fails as soon as
the router's code path starts needing one of them (or the extra misses something).
Slow (~30 s with pip's cache, more without): pip fetches from the package index.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import ROOT, SERVICES
from tests.support.procs import Service, wait_ready
from tests.support.s3server import free_port, stop_process

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

OTHER_ROLES = ("faiss", "h5py", "torch", "torchvision")


def clean_env() -> dict[str, str]:
    """The environment without this checkout on the path and without SIMSEARCH_* values."""
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("SIMSEARCH_")}


def router_venv(tmp_path: Path) -> Path:
    """A venv holding `simsearch[router]` installed from a copy of the source (the copy
    keeps the build's egg-info and build/ folders out of the working tree)."""
    source = tmp_path / "src"
    shutil.copytree(
        SERVICES,
        source / "services",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", f"{source}[router]"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=300,
        check=False,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    return python


def imports(python: Path, module: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), "-c", f"import {module}"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )


def test_serve_router_with_only_the_router_extra(tmp_path: Path) -> None:
    python = router_venv(tmp_path)
    for module in OTHER_ROLES:
        done = imports(python, module)
        assert done.returncode != 0 and "ModuleNotFoundError" in done.stderr, module
    for module in ("kubernetes", "limits"):  # kubernetes discovery, rate limits
        assert imports(python, module).returncode == 0, f"[router] lacks {module}"
    port = free_port()
    env = {
        **clean_env(),
        "SIMSEARCH_HOST": "127.0.0.1",
        "SIMSEARCH_PORT": str(port),
        "SIMSEARCH_SHARDS": f"http://127.0.0.1:{free_port()}",  # nobody there
    }
    log_path = tmp_path / "router.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [str(python.parent / "simsearch"), "serve", "router"],
            env=env,
            cwd=tmp_path,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(Service(f"http://127.0.0.1:{port}", process, log_path), "/health/live", 60)
    finally:
        stop_process(process)
    where = subprocess.run(
        [str(python), "-c", "import simsearch.cli; print(simsearch.cli.__file__)"],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=tmp_path,
        timeout=60,
        check=True,
    )
    assert where.stdout.startswith(str(tmp_path / "venv")), where.stdout  # the installed copy
