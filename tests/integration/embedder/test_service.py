"""The embedder as a real process over real HTTP, with a real S3-protocol server (moto).

One embedder process serves the whole module; every bad input is sent to it and, at the
end, it must still be alive and serving.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from simsearch.common.wire import decode_vectors
from tests.support import bad_images
from tests.support.paths import SAMPLE_IMAGES
from tests.support.procs import Service, start_service
from tests.support.s3server import s3_client

pytestmark = pytest.mark.integration

MAX_IMAGE = 4 * 1024 * 1024
MAX_BODY = 8 * 1024 * 1024
BUCKET = "photos"
OTHER_BUCKET = "elsewhere"  # on the same moto server, readable with the same credentials


def sample(n: int) -> Path:
    return sorted(SAMPLE_IMAGES.glob("*/*.jpg"))[n]


@pytest.fixture(scope="module")
def bucket(s3_endpoint: str) -> str:
    """A bucket on the moto server with three photos and one corrupt object."""
    s3 = s3_client(s3_endpoint)
    s3.create_bucket(Bucket=BUCKET)
    for n in range(3):
        s3.put_object(Bucket=BUCKET, Key=f"lib/img{n}.jpg", Body=sample(n * 100).read_bytes())
    s3.put_object(Bucket=BUCKET, Key="lib/broken.jpg", Body=bad_images.truncated_jpeg())
    s3.put_object(Bucket=BUCKET, Key="library/img0.jpg", Body=sample(0).read_bytes())
    s3.create_bucket(Bucket=OTHER_BUCKET)
    s3.put_object(Bucket=OTHER_BUCKET, Key="lib/img0.jpg", Body=sample(0).read_bytes())
    return BUCKET


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """allowed/ (a photo, a symlink out, a FIFO) next to outside/ (a photo, never readable)."""
    base = tmp_path_factory.mktemp("confinement")
    allowed, outside = base / "allowed", base / "outside"
    allowed.mkdir()
    outside.mkdir()
    (allowed / "photo.jpg").write_bytes(sample(3).read_bytes())
    (outside / "secret.jpg").write_bytes(sample(4).read_bytes())
    (allowed / "link.jpg").symlink_to(outside / "secret.jpg")
    os.mkfifo(allowed / "pipe.jpg")
    return base


@pytest.fixture(scope="module")
def embedder(s3_endpoint: str, bucket: str, files: Path) -> Iterator[Service]:
    env = {
        "SIMSEARCH_TORCH_THREADS": "2",
        "SIMSEARCH_MAX_BATCH": "8",
        "SIMSEARCH_MAX_WAIT_MS": "20",
        "SIMSEARCH_MAX_IMAGE_BYTES": str(MAX_IMAGE),
        "SIMSEARCH_MAX_REQUEST_BYTES": str(MAX_BODY),
        "SIMSEARCH_STORE": f"s3://{bucket}/lib",
        "SIMSEARCH_ALLOWED_ROOTS": f"s3://{bucket}/lib,{(files / 'allowed').as_uri()}",
        "SIMSEARCH_S3_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    with start_service("embedder", env) as service:
        yield service


def embed(url: str, *blobs: bytes, encoding: str = "base64", **headers: str) -> httpx.Response:
    files = [("files", (f"f{i}.jpg", blob, "image/jpeg")) for i, blob in enumerate(blobs)]
    return httpx.post(
        f"{url}/embed", params={"encoding": encoding}, files=files, headers=headers, timeout=60
    )


def vectors_of(response: httpx.Response) -> np.ndarray:
    body = response.json()
    return decode_vectors(body["vectors_b64"], body["dim"])


def test_info_health_and_metrics(embedder: Service) -> None:
    info = httpx.get(f"{embedder.url}/info").json()
    assert info["model"] == "efficientnet-lite0"
    assert info["dim"] == 1280
    assert info["device"] == "cpu"
    assert info["preprocessing"]["crop"] == 224
    assert "efficientnet-lite0" in info["weights"]
    assert httpx.get(f"{embedder.url}/health/live").status_code == 200
    assert httpx.get(f"{embedder.url}/health/ready").json()["status"] == "ready"
    metrics = httpx.get(f"{embedder.url}/metrics").text
    for name in (
        "simsearch_http_requests_total",
        "simsearch_embedder_batch_size_bucket",
        "simsearch_embedder_images_total",
        "simsearch_embedder_inference_seconds",
    ):
        assert name in metrics


@pytest.mark.parametrize(
    ("name", "make", "status", "code"), bad_images.CASES, ids=[c[0] for c in bad_images.CASES]
)
def test_robustness_corpus_gets_the_documented_status(
    embedder: Service, name: str, make: Callable[[], bytes], status: int, code: str | None
) -> None:
    data = bad_images.oversized(MAX_IMAGE) if name == "oversized" else make()
    response = embed(embedder.url, data, encoding="json")
    assert response.status_code == status, response.text
    body = response.json()
    if code is None:
        assert body["count"] == 1 and len(body["vectors"][0]) == 1280
    else:
        assert body["error"] == code
        assert body["detail"]  # a reason a person can read
        assert body["request_id"] == response.headers["x-request-id"]


def test_a_body_over_the_request_limit_is_refused_before_it_is_read(embedder: Service) -> None:
    response = embed(embedder.url, b"\xff\xd8" + b"\0" * MAX_BODY)
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


def test_requests_that_are_not_multipart_or_carry_no_file_get_4xx(embedder: Service) -> None:
    as_json = httpx.post(f"{embedder.url}/embed", json={"file": "x"})
    assert as_json.status_code == 415
    no_file = httpx.post(f"{embedder.url}/embed", files={"note": (None, "hi")})
    assert no_file.status_code == 400
    assert no_file.json()["error"] == "empty_input"
    bad_param = httpx.post(
        f"{embedder.url}/embed",
        params={"encoding": "xml"},
        files={"file": ("a.jpg", sample(0).read_bytes())},
    )
    assert bad_param.status_code == 422


def test_one_bad_file_fails_a_multi_file_request_and_names_it(embedder: Service) -> None:
    response = embed(embedder.url, sample(0).read_bytes(), bad_images.text_named_jpg())
    assert response.status_code == 415
    assert response.json()["detail"].startswith("file #1")


def test_concurrent_requests_are_batched_without_changing_vectors(embedder: Service) -> None:
    data = [sample(n).read_bytes() for n in range(0, 400, 25)]
    alone = [vectors_of(embed(embedder.url, blob))[0] for blob in data[:2]]

    def count_batches() -> float:
        text = httpx.get(f"{embedder.url}/metrics").text
        line = next(
            li for li in text.splitlines() if li.startswith("simsearch_embedder_batch_size_count")
        )
        return float(line.split()[-1])

    before = count_batches()
    with ThreadPoolExecutor(len(data)) as pool:
        responses = list(pool.map(lambda blob: embed(embedder.url, blob), data))
    batches = count_batches() - before
    assert all(r.status_code == 200 for r in responses)
    together = [vectors_of(r)[0] for r in responses]
    for single, batched in zip(alone, together[:2], strict=False):
        assert np.abs(single - batched).max() < 1e-5
    assert batches < len(data), "16 concurrent requests should share forward passes"


def test_the_request_id_follows_the_request_into_the_logs(embedder: Service) -> None:
    response = embed(embedder.url, sample(1).read_bytes(), **{"X-Request-ID": "trace-me-42"})
    assert response.headers["x-request-id"] == "trace-me-42"
    lines = [li for li in embedder.log().splitlines() if "trace-me-42" in li]
    assert any('"route": "/embed"' in li for li in lines)


def test_embed_keys_fetches_from_s3_and_reports_bad_keys(embedder: Service, bucket: str) -> None:
    keys = [
        "img0.jpg",
        "img1.jpg",
        "broken.jpg",
        "missing.jpg",
        f"s3://{bucket}/lib/img2.jpg",
        "../escape.jpg",
    ]
    response = httpx.post(
        f"{embedder.url}/embed/keys", json={"keys": keys, "encoding": "base64"}, timeout=60
    )
    assert response.status_code == 200, response.text
    body = response.json()
    vectors = decode_vectors(body["vectors_b64"], body["dim"])
    assert vectors.shape == (6, 1280)
    errors = {e["key"]: (e["status"], e["error"]) for e in body["errors"]}
    assert errors == {
        "broken.jpg": (400, "corrupt_image"),
        "missing.jpg": (404, "object_not_found"),
        "../escape.jpg": (403, "forbidden"),
    }
    direct = vectors_of(embed(embedder.url, *(sample(n * 100).read_bytes() for n in range(3))))
    assert np.abs(vectors[[0, 1, 4]] - direct).max() < 1e-5


def embed_keys(url: str, keys: list[str]) -> dict[str, tuple[int, str, str]]:
    """key -> (status, error, detail) of every key; 200 keys as (200, "", "")."""
    response = httpx.post(f"{url}/embed/keys", json={"keys": keys}, timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    answers = {key: (200, "", "") for key in keys}
    for e in body["errors"]:
        answers[e["key"]] = (e["status"], e["error"], e["detail"])
    for key, row in zip(keys, body["vectors"], strict=True):
        assert (row is not None) == (answers[key][0] == 200)
    return answers


def test_embed_keys_reads_only_under_the_allowed_roots(
    embedder: Service, bucket: str, files: Path
) -> None:
    allowed = (files / "allowed").as_uri()
    expected = {
        f"{allowed}/photo.jpg": 200,
        f"s3://{bucket}/lib/img0.jpg": 200,
        "file:///etc/passwd": 403,
        f"{allowed}/../outside/secret.jpg": 403,  # traversal out of a file root
        f"{allowed}/%2e%2e/outside/secret.jpg": 403,  # the same, percent-encoded
        f"{allowed}/%2E%2E%2Foutside/secret.jpg": 403,
        f"{allowed}/link.jpg": 403,  # a symlink inside pointing outside
        (files / "outside" / "secret.jpg").as_uri(): 403,  # a readable image, outside
        f"s3://{OTHER_BUCKET}/lib/img0.jpg": 403,  # another bucket the credentials reach
        f"s3://{bucket}/library/img0.jpg": 403,  # "lib" is a prefix only on a "/" boundary
        f"s3://{bucket}/lib/%2e%2e/library/img0.jpg": 403,
        "file:///dev/zero": 403,
    }
    started = time.monotonic()
    answers = embed_keys(embedder.url, list(expected))
    assert time.monotonic() - started < 20
    assert {k: a[0] for k, a in answers.items()} == expected
    assert all(a[1] == "forbidden" and a[2] for a in answers.values() if a[0] == 403)
    metrics = httpx.get(f"{embedder.url}/metrics").text
    assert 'simsearch_embedder_rejected_images_total{error="forbidden"}' in metrics


def test_a_fifo_inside_a_root_is_refused_at_once(embedder: Service, files: Path) -> None:
    started = time.monotonic()
    pipe = (files / "allowed" / "pipe.jpg").as_uri()
    answers = embed_keys(embedder.url, [pipe, (files / "allowed").as_uri() + "/"])
    assert time.monotonic() - started < 10  # no fetch thread waits for a writer
    assert answers[pipe][:2] == (404, "object_not_found")
    assert "not a regular file" in answers[pipe][2]
    assert all(400 <= a[0] < 500 for a in answers.values())


def test_outside_the_roots_a_missing_file_answers_like_an_existing_one(
    embedder: Service, files: Path
) -> None:
    pairs = [
        ((files / "outside" / "secret.jpg").as_uri(), (files / "outside" / "nope.jpg").as_uri()),
        ("file:///etc/passwd", "file:///etc/no-such-file"),
        (f"s3://{OTHER_BUCKET}/lib/img0.jpg", f"s3://{OTHER_BUCKET}/lib/nope.jpg"),
    ]
    answers = embed_keys(embedder.url, [ref for pair in pairs for ref in pair])
    for existing, missing in pairs:
        status, error, detail = answers[existing]
        assert (status, error) == (403, "forbidden")
        assert answers[missing] == (status, error, detail.replace(existing, missing))


def test_an_index_build_the_embedder_may_not_read_stops_at_once(
    embedder: Service, files: Path, tmp_path: Path
) -> None:
    build = run_cli(
        "index", "build", "--images", (files / "outside").as_uri(),
        "--store", str(tmp_path / "store"), "--embedder", embedder.url,
        "--workdir", str(tmp_path / "work"), "--no-progress",
        env=dict(os.environ),
    )  # fmt: skip
    assert build.returncode == 2, build.stderr
    assert "SIMSEARCH_ALLOWED_ROOTS" in build.stderr


def test_embed_keys_validates_its_body(embedder: Service) -> None:
    assert httpx.post(f"{embedder.url}/embed/keys", json={"keys": []}).status_code == 422
    assert httpx.post(f"{embedder.url}/embed/keys", content=b"{nope").status_code == 422


def test_still_alive_and_serving_after_everything(embedder: Service) -> None:
    assert embedder.process.poll() is None
    assert embed(embedder.url, sample(2).read_bytes()).status_code == 200


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "simsearch.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_start_up_fails_fast_and_clearly_on_bad_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    env = {**os.environ, "TORCH_HOME": str(tmp_path), "SIMSEARCH_PORT": "1"}
    missing = run_cli("serve", "embedder", "--model", "resnet50", env=env)
    assert missing.returncode == 2
    assert "SIMSEARCH_WEIGHTS" in missing.stderr and "resnet50" in missing.stderr
    bad = run_cli("serve", "embedder", env={**env, "SIMSEARCH_MAX_BATCH": "0"})
    assert bad.returncode == 2
    assert "SIMSEARCH_MAX_BATCH" in bad.stderr
    roots = run_cli("serve", "embedder", env={**env, "SIMSEARCH_ALLOWED_ROOTS": "ftp://x/y"})
    assert roots.returncode == 2
    assert "SIMSEARCH_ALLOWED_ROOTS" in roots.stderr and "ftp://x/y" in roots.stderr
