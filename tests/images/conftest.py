"""The images under test: built from this checkout by `scripts/build-images.sh` first.

The build is the script users and CI run (buildah, daemonless), with its layer cache: on a
machine that built them before only the layers the change touched are rebuilt. Its output
is kept in the build folder's logs; a failed build fails every image test with its tail.
"""

from __future__ import annotations

import os
import subprocess
import tomllib

import pytest

from tests.support.paths import ROOT

BUILD_TIMEOUT_S = 1800  # base (~40 s) + router and shard (~2 min each) on a fresh machine
TARGETS = ("router", "shard")


def project_version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


@pytest.fixture(scope="session")
def images() -> dict[str, str]:
    """Role → the image tag just built for it."""
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-images.sh")],
        cwd=ROOT,
        env={**os.environ, "TARGETS": " ".join(TARGETS)},
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    print(done.stdout)  # the script's table of build times and sizes
    assert done.returncode == 0, f"build-images.sh failed:\n{done.stdout[-3000:]}{done.stderr}"
    return {role: f"localhost/simsearch-{role}:{project_version()}" for role in TARGETS}
