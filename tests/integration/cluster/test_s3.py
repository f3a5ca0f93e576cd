"""The whole pipeline on a real S3-protocol server (moto) with real processes.

Photos are uploaded to a bucket; `simsearch index build` indexes them through the embedder
service into the same bucket; two shard processes load their partitions from S3; the
router answers `/search/image` with the photo itself first.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.paths import SAMPLE_IMAGES
from tests.support.procs import Service, start_service
from tests.support.s3server import s3_client

pytestmark = pytest.mark.integration

BUCKET = "cluster"


@pytest.fixture(scope="module")
def s3_settings(s3_endpoint: str) -> dict[str, str]:
    return {
        "SIMSEARCH_S3_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


@pytest.fixture(scope="module")
def photos(s3_endpoint: str) -> list[Path]:
    s3 = s3_client(s3_endpoint)
    s3.create_bucket(Bucket=BUCKET)
    chosen = sorted(SAMPLE_IMAGES.glob("*/*.jpg"))[::12]  # ~42 photos of all five classes
    for photo in chosen:
        s3.put_object(
            Bucket=BUCKET, Key=f"photos/{photo.parent.name}/{photo.name}", Body=photo.read_bytes()
        )
    return chosen


@pytest.fixture(scope="module")
def cluster(
    s3_settings: dict[str, str], photos: list[Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    work = tmp_path_factory.mktemp("cluster")
    embedder_env = {
        **s3_settings,
        "SIMSEARCH_TORCH_THREADS": "2",
        "SIMSEARCH_ALLOWED_ROOTS": f"s3://{BUCKET}/photos",  # what the build sends it
    }
    with start_service("embedder", embedder_env) as embedder:
        build = subprocess.run(
            [
                sys.executable,
                "-m",
                "simsearch.cli",
                "index",
                "build",
                "--images",
                f"s3://{BUCKET}/photos",
                "--store",
                f"s3://{BUCKET}/indexes",
                "--partitions",
                "8",
                "--embedder",
                embedder.url,
                "--workdir",
                str(work / "build"),
                "--no-progress",
            ],
            env={**os.environ, **s3_settings},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert build.returncode == 0, build.stderr
        assert f'"embedded": {len(photos)}' in build.stdout
        shard_env = {
            **s3_settings,
            "SIMSEARCH_STORE": f"s3://{BUCKET}/indexes",
            "SIMSEARCH_REPLICAS": "2",
        }
        with (
            start_service(
                "shard",
                {
                    **shard_env,
                    "SIMSEARCH_SHARD_ORDINAL": "0",
                    "SIMSEARCH_CACHE_DIR": str(work / "c0"),
                },
            ) as s0,
            start_service(
                "shard",
                {
                    **shard_env,
                    "SIMSEARCH_SHARD_ORDINAL": "1",
                    "SIMSEARCH_CACHE_DIR": str(work / "c1"),
                },
            ) as s1,
            start_service(
                "router",
                {
                    **s3_settings,
                    "SIMSEARCH_SHARDS": f"{s0.url},{s1.url}",
                    "SIMSEARCH_EMBEDDER_URL": embedder.url,
                    "SIMSEARCH_STORE": f"s3://{BUCKET}/indexes",
                },
            ) as router,
        ):
            yield router


def test_an_indexed_photo_finds_itself_first(cluster: Service, photos: list[Path]) -> None:
    photo = photos[5]
    with photo.open("rb") as handle:
        response = httpx.post(
            f"{cluster.url}/search/image",
            params={"k": 5},
            files={"file": (photo.name, handle, "image/jpeg")},
            timeout=60,
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success" and body["coverage"] == 1.0 and not body["partial"]
    first = body["results"][0]
    assert first["path"] == f"{photo.parent.name}/{photo.name}"
    assert first["similarity_score"] >= 0.99
    image = httpx.get(f"{cluster.url}{first['url']}", timeout=30)
    assert image.status_code == 200 and image.content == photo.read_bytes()


def test_stats_and_health_describe_the_cluster(cluster: Service, photos: list[Path]) -> None:
    health = httpx.get(f"{cluster.url}/health").json()
    assert health["status"] == "healthy" and health["total_vectors"] == len(photos)
    stats = httpx.get(f"{cluster.url}/stats").json()
    assert stats["model"] == "efficientnet-lite0" and stats["dim"] == 1280
    assert len(stats["shards"]) == 2
