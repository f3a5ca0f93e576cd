"""`simsearch index build` advises a new template when the new images drift (moto S3).

Each index starts as a version written from vectors by `write_index` (the write stage of
every build) into the bucket: the CLI's own first build of a few dozen photos would get
the exact plan, which has no coarse centroids to drift from. Both are the fast-scan plan
with a PCA (the default above 50k vectors), shrunk to train in seconds. Then the real CLI
builds incrementally: it lists the bucket, reads the base's stored vectors back, embeds
the new photos with the in-process model, reuses the template and publishes. Ten new
flower photos arrive on each of:

- a template trained on other photos of the same five flower classes: no advice;
- a template trained on synthetic clustered vectors (the project's photo-like
  generator), whose images are placeholders (the build reuses their stored vectors and
  never reads those bytes): real photos lie far from every centroid, so the build prints
  the advice, one line on stderr, and logs the figures.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from simsearch.common.ann import unit_rows
from simsearch.common.features import open_features
from simsearch.common.ids import key_ids
from simsearch.common.layout import IndexLayout
from simsearch.common.manifest import Manifest, ModelInfo
from simsearch.common.storage import S3Options, S3Store, open_store
from simsearch.indexer.embedding import LocalBackend
from simsearch.indexer.faissbuild import choose_params
from simsearch.indexer.settings import DEFAULT_DRIFT_ADVICE_RATIO
from simsearch.indexer.writer import load_template, write_index
from tests.support.paths import SAMPLE_IMAGES
from tests.support.procs import checkout_env
from tests.support.s3server import AWS, s3_client

pytestmark = pytest.mark.integration

BUCKET = "drift"
BASE_PER_CLASS, NEW_PER_CLASS = 12, 2


@dataclass
class Photos:
    """Base photos with their vectors, and the new photos the CLI embeds (and their
    vectors, embedded here too, to check what the build stored)."""

    base: list[str]
    base_vectors: np.ndarray
    new: list[str]
    new_vectors: np.ndarray
    model: ModelInfo


@pytest.fixture(scope="module")
def photos() -> Photos:
    base, new = [], []
    for folder in sorted(p for p in SAMPLE_IMAGES.iterdir() if p.is_dir()):
        files = sorted(f"{folder.name}/{f.name}" for f in folder.glob("*.jpg"))
        base += files[:BASE_PER_CLASS]
        new += files[BASE_PER_CLASS : BASE_PER_CLASS + NEW_PER_CLASS]
    backend = LocalBackend(open_store(str(SAMPLE_IMAGES)), workers=2, batch=16)
    done, vectors, refused = backend.embed(base + new)
    assert done == base + new and not refused
    x = np.asarray(vectors, np.float32)
    return Photos(base, x[: len(base)], new, x[len(base) :], backend.model)


def clustered(n: int, dim: int, centres: int, seed: int = 0) -> np.ndarray:
    """`scripts/bench/search_bench.clustered`: unit vectors around random centres."""
    rng = np.random.default_rng(seed)
    middle = np.random.default_rng(12345).standard_normal((centres, dim)).astype(np.float32)
    x = middle[rng.integers(0, centres, n)] + 0.8 * rng.standard_normal((n, dim))
    return unit_rows(x.astype(np.float32))


def layout_of(endpoint: str, index: str) -> IndexLayout:
    return IndexLayout(S3Store(BUCKET, "indexes", S3Options(endpoint_url=endpoint)), index)


def upload(s3: Any, prefix: str, objects: dict[str, bytes]) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda kv: s3.put_object(Bucket=BUCKET, Key=f"{prefix}/{kv[0]}", Body=kv[1]),
                objects.items(),
            )
        )


def photo_bytes(keys: list[str]) -> dict[str, bytes]:
    return {key: (SAMPLE_IMAGES / key).read_bytes() for key in keys}


def base_version(
    layout: IndexLayout, keys: list[str], x: np.ndarray, model: ModelInfo, nlist: int
) -> Manifest:
    """A fast-scan version with a PCA (shrunk: 16 dimensions, 4 per code) of `x`."""
    plan = choose_params(len(x), x.shape[1], nlist=nlist, pq_m=4, kind="fastscan", pca_dim=16)
    manifest = write_index(layout, key_ids(keys), x, keys, model, partitions=2, params=plan)
    assert manifest.params.pca_dim == 16 and manifest.centroid_fit is not None
    return manifest


def cli_build(
    endpoint: str, prefix: str, index: str, work: Path
) -> subprocess.CompletedProcess[str]:
    """`simsearch index build` of s3://drift/<prefix> into the index, in a subprocess."""
    env = checkout_env({**AWS, "SIMSEARCH_S3_ENDPOINT_URL": endpoint})
    command = [sys.executable, "-m", "simsearch.cli", "index", "build", "--no-progress"]
    command += ["--images", f"s3://{BUCKET}/{prefix}", "--store", f"s3://{BUCKET}/indexes"]
    command += ["--index", index, "--partitions", "2", "--workdir", str(work)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


def advice_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("advice:")]


@pytest.fixture(scope="module")
def bucket(s3_endpoint: str) -> Any:
    s3 = s3_client(s3_endpoint)
    s3.create_bucket(Bucket=BUCKET)
    return s3


def test_new_photos_like_the_indexed_ones_get_no_advice(
    s3_endpoint: str, s3_env: None, bucket: Any, photos: Photos, tmp_path: Path
) -> None:
    layout = layout_of(s3_endpoint, "flowers")
    upload(bucket, "flowers", photo_bytes(photos.base))
    base = base_version(layout, photos.base, photos.base_vectors, photos.model, nlist=4)
    upload(bucket, "flowers", photo_bytes(photos.new))

    done = cli_build(s3_endpoint, "flowers", "flowers", tmp_path / "work")
    report = json.loads(done.stdout)
    assert report["embedded"] == len(photos.new) and report["reused"] == len(photos.base)
    drift = report["drift"]
    assert drift["reused_template"] and drift["fresh_sample"] == len(photos.new)
    assert drift["ratio"] < DEFAULT_DRIFT_ADVICE_RATIO, drift
    assert report["advice"] is None and not advice_lines(done.stderr)
    manifest = layout.load_manifest()
    assert manifest.version == report["version"] and manifest.parent == base.version
    assert manifest.trained == base.trained  # the template was reused
    assert manifest.centroid_fit is not None and base.centroid_fit is not None
    assert manifest.centroid_fit.trained == base.centroid_fit.trained


def test_new_photos_far_from_the_template_get_the_advice(
    s3_endpoint: str, s3_env: None, bucket: Any, photos: Photos, tmp_path: Path
) -> None:
    layout = layout_of(s3_endpoint, "synthetic")
    old = [f"old/{i:04d}.jpg" for i in range(500)]
    upload(bucket, "synthetic", dict.fromkeys(old, b"placeholder"))
    x = clustered(len(old), photos.model.dim, centres=16)
    base = base_version(layout, old, x, photos.model, nlist=8)
    upload(bucket, "synthetic", photo_bytes(photos.new))

    done = cli_build(s3_endpoint, "synthetic", "synthetic", tmp_path / "work")
    report = json.loads(done.stdout)
    assert report["embedded"] == len(photos.new) and report["reused"] == len(old)
    drift = report["drift"]
    assert drift["ratio"] > DEFAULT_DRIFT_ADVICE_RATIO, drift
    lines = advice_lines(done.stderr)
    assert lines == [report["advice"]], done.stderr  # one line, the report's
    said = re.search(r"lie (\d+\.\d\d)× farther from the index's centroids", lines[0])
    assert said is not None and abs(float(said[1]) - drift["ratio"]) < 0.006
    assert "simsearch index build --full" in lines[0]  # a PCA version: --retrain cannot
    assert f"drift: the {len(photos.new)} new vectors' mean centroid distance" in done.stderr
    manifest = layout.load_manifest()
    assert manifest.version == report["version"] and manifest.trained == base.trained
    assert manifest.centroid_fit is not None and base.centroid_fit is not None
    assert manifest.centroid_fit.trained == base.centroid_fit.trained
    assert_new_vectors_stored_projected(layout, manifest, photos, tmp_path / "read")


def assert_new_vectors_stored_projected(
    layout: IndexLayout, manifest: Manifest, photos: Photos, folder: Path
) -> None:
    """The incremental build stored the new photos as the template projects them (the
    base's vectors are stored projected; the build must not mix the two spaces)."""
    folder.mkdir()
    template = load_template(layout, manifest, folder)
    expected = dict(zip(photos.new, template.project(unit_rows(photos.new_vectors)), strict=True))
    seen = 0
    for info in manifest.partition_files:
        path = folder / f"{info.partition}.h5"
        layout.store.download_file(layout.resolve(info.features), path)
        features = open_features(path)
        keys = features.paths(np.arange(len(features.ids)))
        for row, key in enumerate(keys):
            if key in expected:
                stored = np.asarray(features.vectors[row], np.float32)
                assert np.allclose(stored, expected[key], atol=2e-3), key
                seen += 1
    assert seen == len(photos.new)


@pytest.mark.parametrize(
    ("flags", "why"),
    [(["--partitions", "2", "--retrain"], "--retrain"), (["--partitions", "3"], "3 partitions")],
)
def test_a_new_template_for_a_pca_version_is_refused_before_embedding(
    s3_endpoint: str,
    s3_env: None,
    bucket: Any,
    photos: Photos,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    why: str,
) -> None:
    """Its vectors are stored projected: no PCA can be trained from them, so `--retrain`
    (or a new partition count, which retrains) would have to embed everything: `--full`."""
    from simsearch.cli import main

    index = f"refuse-{flags[-1].strip('-')}"
    layout = layout_of(s3_endpoint, index)
    base = base_version(layout, photos.base, photos.base_vectors, photos.model, nlist=4)
    upload(bucket, index, photo_bytes(photos.new))
    monkeypatch.setenv("SIMSEARCH_S3_ENDPOINT_URL", s3_endpoint)
    args = ["index", "build", "--no-progress", "--images", f"s3://{BUCKET}/{index}"]
    args += ["--store", f"s3://{BUCKET}/indexes", "--index", index, "--workdir", str(tmp_path)]
    assert main([*args, *flags]) == 2
    err = capsys.readouterr().err
    assert "configuration error" in err and "PCA16 scoring space" in err, err
    assert f"a new template ({why}" in err and "rebuild with --full" in err
    assert layout.current() == base.version  # nothing published
    assert not (tmp_path / "journal").exists() or not any((tmp_path / "journal").iterdir())
