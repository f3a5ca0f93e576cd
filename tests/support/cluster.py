"""A small real cluster for black-box tests: 2 shards, an embedder, a router, a moto S3.

300 random unit vectors of dim 1280 (exact IVF1,Flat, P=8) written by the indexer's own
writer to a file:// store; three real photos in a moto bucket under the manifest's
source; the embedder with random weights. One context manager, so the router tests, the
fuzz pass and `scripts/fuzz.sh` do not each grow their own copy.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simsearch.common.ids import key_ids
from simsearch.common.layout import IndexLayout
from simsearch.common.manifest import ModelInfo
from simsearch.common.storage import open_store
from simsearch.indexer.writer import write_index
from tests.support.paths import SAMPLE_IMAGES
from tests.support.procs import Service, checkout_env, wait_ready
from tests.support.s3server import AWS, free_port, s3_client, stop_process

N, DIM, P = 300, 1280, 8
MODEL = "efficientnet-lite0"  # what the embedder (random weights) reports
BUCKET = "fuzz-photos"


@dataclass
class SmallCluster:
    """The running services and what the index holds (tests may replace a shard)."""

    router: Service
    shards: list[Service]
    embedder: Service
    version: str
    ids: np.ndarray
    vectors: np.ndarray  # unit rows, as indexed
    paths: list[str]
    images: dict[str, bytes]  # key -> bytes stored in the bucket (the first three keys)
    shard_env: Callable[[int], dict[str, str]]
    router_env: dict[str, str]


def spawn(role: str, env: dict[str, str], port: int | None = None) -> Service:
    """`simsearch serve ROLE` on `port` (a fresh loopback one by default), not waited for
    (several start in parallel)."""
    port = port or free_port()
    log_path = Path(tempfile.mkdtemp(prefix="simsearch-")) / f"{role}-{port}.log"
    full_env = checkout_env({**AWS, "SIMSEARCH_HOST": "127.0.0.1", "SIMSEARCH_PORT": str(port)})
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "simsearch.cli", "serve", role],
            env={**full_env, **env},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    return Service(f"http://127.0.0.1:{port}", process, log_path)


def _write_images(s3_endpoint: str, paths: list[str]) -> dict[str, bytes]:
    """Three real photos under the first three keys; the other keys have no object."""
    s3 = s3_client(s3_endpoint)
    s3.create_bucket(Bucket=BUCKET)
    photos = sorted(SAMPLE_IMAGES.glob("*/*.jpg"))[:3]
    stored = {key: photo.read_bytes() for key, photo in zip(paths, photos, strict=False)}
    for key, data in stored.items():
        s3.put_object(Bucket=BUCKET, Key=f"lib/{key}", Body=data)
    return stored


def _write_index(store_uri: str, paths: list[str]) -> tuple[str, np.ndarray, np.ndarray]:
    ids = key_ids(paths)
    x = np.random.default_rng(3).standard_normal((N, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    manifest = write_index(
        IndexLayout(open_store(store_uri)), ids, x, paths, ModelInfo(name=MODEL, dim=DIM),
        partitions=P, source=f"s3://{BUCKET}/lib",
    )  # fmt: skip
    return manifest.version, ids, x


@contextmanager
def small_cluster(s3_endpoint: str, root: Path) -> Iterator[SmallCluster]:
    """Start the whole cluster on loopback; every process is stopped on the way out."""
    store_uri = (root / "store").as_uri()
    paths = [f"photos/{i:04d}.jpg" for i in range(N)]
    version, ids, x = _write_index(store_uri, paths)
    images = _write_images(s3_endpoint, paths)

    def shard_env(ordinal: int) -> dict[str, str]:
        return {
            "SIMSEARCH_STORE": store_uri,
            "SIMSEARCH_SHARD_ORDINAL": str(ordinal),
            "SIMSEARCH_REPLICAS": "2",
            "SIMSEARCH_POLL_S": "1",
            "SIMSEARCH_CACHE_DIR": str(root / f"cache-{ordinal}"),
        }

    with ExitStack() as stack:
        running: list[Service] = []  # a test may replace a shard: stop whatever runs then

        def stop_running() -> None:
            for service in running:
                stop_process(service.process)

        stack.callback(stop_running)

        def started(service: Service) -> Service:
            running.append(service)
            return service

        embedder = started(
            spawn("embedder", {"SIMSEARCH_WEIGHTS": "random", "SIMSEARCH_TORCH_THREADS": "1"})
        )
        shards = [started(spawn("shard", shard_env(o))) for o in range(2)]
        for shard in shards:
            wait_ready(shard, "/health/ready", 60)
        router_env = {
            "SIMSEARCH_SHARDS": ",".join(s.url for s in shards),
            "SIMSEARCH_STORE": store_uri,  # the manifest's source is the images root
            "SIMSEARCH_S3_ENDPOINT_URL": s3_endpoint,
            "SIMSEARCH_EMBEDDER_URL": embedder.url,
            "SIMSEARCH_POLL_S": "0.2",
            "SIMSEARCH_TIMEOUT_MS": "3000",
        }
        router = started(spawn("router", router_env))
        wait_ready(router, "/health/ready", 30)
        wait_ready(embedder, "/health/ready", 90)
        cluster = SmallCluster(
            router, shards, embedder, version, ids, x, paths, images, shard_env, router_env
        )
        yield cluster
        running.extend(cluster.shards)  # replacements started by the test
