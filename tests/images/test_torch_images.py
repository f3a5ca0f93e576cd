"""The torch images (embedder, indexer), run as the chart runs them: `make test-torch-images`.

Not part of CI: with this machine's pinned torch (the CUDA build, from the local wheels)
each image is ~6 GB and takes ~10 minutes to build with vfs storage. The embedder starts
with the chart's environment, securityContext and volumes, and must embed a bundled photo
as a `simsearch serve embedder` process does (same weights: the model package's); the
indexer image must say the chart's release and carry no build tools.
"""

from __future__ import annotations

import json
import os
import time

import httpx
import numpy as np
import pytest

from simsearch.common.wire import decode_vectors
from tests.images.test_containers import HYGIENE, ready_within
from tests.support.helm import (
    chart_metadata,
    containers,
    pod_specs,
    render,
    resolved_env,
    role_container,
)
from tests.support.paths import SAMPLE_IMAGES
from tests.support.podman import (
    LIMITS,
    build_images,
    image_labels,
    podman,
    running,
    security_flags,
    volume_flags,
)
from tests.support.procs import start_service
from tests.support.s3server import free_port

pytestmark = [pytest.mark.torch_images, pytest.mark.integration, pytest.mark.timeout(3600)]

TORCH_TARGETS = ("embedder", "indexer")


@pytest.fixture(scope="module")
def torch_images() -> dict[str, str]:
    """The embedder and indexer images, built with torch from TORCH_WHEELS (a wheel
    directory, default /tmp/simsearch-torch-wheels) unless TORCH_INDEX_URL is set."""
    source = {}
    if not os.environ.get("TORCH_INDEX_URL"):
        source["TORCH_WHEELS"] = os.environ.get("TORCH_WHEELS", "/tmp/simsearch-torch-wheels")
    return build_images(TORCH_TARGETS, 3600, **source)


def embedding(url: str, photo: bytes) -> np.ndarray:
    files = [("files", ("photo.jpg", photo, "image/jpeg"))]
    response = httpx.post(f"{url}/embed", params={"encoding": "base64"}, files=files, timeout=120)
    assert response.status_code == 200, response.text
    body = response.json()
    return decode_vectors(body["vectors_b64"], body["dim"])[0]


def test_the_embedder_image_embeds_as_the_process_does(
    torch_images: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = tmp_path_factory.mktemp("embedder")
    container = role_container("embedder", render())
    port = free_port()
    env = {**resolved_env(container, "demo-simsearch-embedder-0"), "SIMSEARCH_PORT": str(port)}
    flags = [
        *security_flags(container["securityContext"]),
        *volume_flags(container.get("volumeMounts", []), root),
    ]
    photo = sorted(SAMPLE_IMAGES.glob("*/*.jpg"))[0].read_bytes()
    started = time.monotonic()
    with running(
        torch_images["embedder"], container["args"], env, flags, port, "embedder"
    ) as embedder:
        print(f"\nembedder image ready in {ready_within(embedder, started):.1f} s")
        from_image = embedding(embedder.url, photo)
        assert embedder.changed_paths() == []
        found = json.loads(embedder.exec("python3", "-c", HYGIENE))
        version = embedder.exec("simsearch", "--version").strip()
    local_env = {k: env[k] for k in ("SIMSEARCH_MODEL", "SIMSEARCH_DEVICE")}
    with start_service("embedder", local_env, timeout_s=180) as process:
        from_process = embedding(process.url, photo)
    assert from_image.shape == from_process.shape == (1280,)
    assert float(from_image @ from_process) > 0.9999
    assert found["tools"] == [] and "torch" in found["modules"], found
    assert version == f"simsearch {chart_metadata()['appVersion']}"


def test_the_torch_images_say_the_charts_release(torch_images: dict[str, str]) -> None:
    job = next(o for o in render() if o["kind"] == "Job" and "-indexer" in o["metadata"]["name"])
    flags = security_flags(containers(pod_specs(job)[0])[0]["securityContext"])
    out = podman(
        "run", "--rm", "--network", "none", *LIMITS, *flags, torch_images["indexer"], "--version"
    )
    release = chart_metadata()["appVersion"]
    assert out.strip() == f"simsearch {release}"
    for image in torch_images.values():
        labels = image_labels(image)
        assert labels.get("org.opencontainers.image.version") == release, labels
