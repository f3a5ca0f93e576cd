"""The images under test: built from this checkout by `scripts/build-images.sh` first.

The build is the script users and CI run (buildah, daemonless), with its layer cache: on a
machine that built them before only the layers the change touched are rebuilt. Its output
is kept in the build folder's logs; a failed build fails every image test with its tail.
"""

from __future__ import annotations

import pytest

from tests.support.podman import build_images

BUILD_TIMEOUT_S = 1800  # base (~40 s) + router and shard (~2 min each) on a fresh machine


@pytest.fixture(scope="session")
def images() -> dict[str, str]:
    """Role → the router and shard image tags just built."""
    return build_images(("router", "shard"), BUILD_TIMEOUT_S)
