"""`simsearch index build` on real photos with the real model, into a file:// store."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from simsearch.common.layout import IndexLayout
from simsearch.common.storage import open_store
from simsearch.indexer.build import BuildOptions, build
from simsearch.indexer.embedding import Chunk, LocalBackend
from simsearch.indexer.import_h5 import import_h5
from tests.support import bad_images
from tests.support.paths import SAMPLE_IMAGES


def copy_samples(target: Path, start: int, count: int) -> list[Path]:
    photos = sorted(SAMPLE_IMAGES.glob("*/*.jpg"))[start : start + count]
    out = []
    for photo in photos:
        dest = target / photo.parent.name / photo.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, dest)
        out.append(dest)
    return out


@pytest.fixture(scope="module")
def backend_factory() -> type[LocalBackend]:
    return LocalBackend


class Crashing:
    """Wraps a backend and dies after `chunks` chunks, like a killed build job."""

    def __init__(self, inner: LocalBackend, chunks: int) -> None:
        self.inner, self.left, self.model = inner, chunks, inner.model

    def embed(self, keys: list[str]) -> Chunk:
        if self.left == 0:
            raise KeyboardInterrupt("killed")
        self.left -= 1
        return self.inner.embed(keys)


def options(tmp_path: Path, **kw: object) -> BuildOptions:
    return BuildOptions(partitions=4, chunk=8, workdir=tmp_path / "work", progress=False, **kw)  # type: ignore[arg-type]


def test_build_incremental_resume_and_bad_images(tmp_path: Path) -> None:
    images_dir = tmp_path / "images"
    copy_samples(images_dir, 0, 30)
    (images_dir / "broken.jpg").write_bytes(bad_images.truncated_jpeg())
    (images_dir / "notes.txt").write_text("not an image, not scanned")
    images = open_store(str(images_dir))
    layout = IndexLayout(open_store(str(tmp_path / "store")), "photos")
    backend = LocalBackend(images, workers=2, batch=8)

    first = build(images, layout, backend, options(tmp_path))
    assert first.scanned == 31 and first.embedded == 30
    assert set(first.failed) == {"broken.jpg"} and "corrupt_image" in first.failed["broken.jpg"]
    manifest = layout.load_manifest()
    assert manifest.total == 30 and manifest.version == first.version
    assert manifest.model.name == "efficientnet-lite0" and manifest.params.factory == "IVF1,Flat"

    again = build(images, layout, backend, options(tmp_path))
    assert again.unchanged and again.version == first.version

    added = copy_samples(images_dir, 100, 5)
    for gone in sorted(images_dir.glob("daisy/*.jpg"))[:3]:
        gone.unlink()
    with pytest.raises(KeyboardInterrupt):  # dies after the first chunk of new images
        build(images, layout, Crashing(backend, 0), options(tmp_path))
    assert layout.current() == first.version  # a crashed build is invisible
    second = build(images, layout, backend, options(tmp_path))
    assert second.embedded == len(added) and second.reused == 27 and second.deleted == 3
    newer = layout.load_manifest()
    assert newer.total == 32 and newer.parent == first.version
    assert newer.trained == manifest.trained  # the template was reused, not retrained


def test_a_killed_build_resumes_without_re_embedding(tmp_path: Path) -> None:
    images_dir = tmp_path / "images"
    copy_samples(images_dir, 200, 20)
    images = open_store(str(images_dir))
    layout = IndexLayout(open_store(str(tmp_path / "store")))
    backend = LocalBackend(images, workers=2, batch=8)
    with pytest.raises(KeyboardInterrupt):
        build(images, layout, Crashing(backend, 2), options(tmp_path))  # 16 of 20 embedded
    report = build(images, layout, backend, options(tmp_path))
    assert report.resumed == 16 and report.embedded == 4
    assert layout.load_manifest().total == 20


def test_import_h5_from_the_old_service(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((300, 2048)).astype(np.float32)
    paths = [f"static/images/{i}.jpg" for i in range(300)]
    old = tmp_path / "features.h5"
    with h5py.File(old, "w") as h5:  # exactly what the old service wrote
        h5.create_dataset("features", data=vectors)
        h5.create_dataset("paths", data=np.array(paths, dtype="S"))
    layout = IndexLayout(open_store(str(tmp_path / "store")))
    manifest = import_h5(old, layout, partitions=8)
    assert manifest.total == 300 and manifest.model.dim == 2048
    assert manifest.model.name == "resnet50"
    assert layout.current() == manifest.version


def test_build_of_an_empty_images_root_fails_clearly_unless_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An install hook runs before anyone uploaded images: --allow-empty makes that a no-op."""
    from simsearch.cli import main

    (tmp_path / "images").mkdir()
    args = ["index", "build", "--images", str(tmp_path / "images"), "--store", str(tmp_path / "s")]
    assert main([*args, "--no-progress"]) == 1
    assert "no images under" in capsys.readouterr().err
    assert main([*args, "--no-progress", "--allow-empty"]) == 0
    assert not (tmp_path / "s" / "index" / "default" / "CURRENT").exists()


def test_recall_probe_picks_the_smallest_nprobe_reaching_the_target() -> None:
    from simsearch.indexer.probe import _smallest_reaching, nprobe_ladder

    ladder = nprobe_ladder(4096)
    for threshold in (1, 3, 5, 6, 7, 100, 192, 193, 256, 4096):
        measured: list[int] = []

        def measure(nprobe: int, threshold: int = threshold, seen: list[int] = measured) -> float:
            seen.append(nprobe)
            return 1.0 if nprobe >= threshold else 0.0

        expected = min(p for p in ladder if p >= threshold)
        assert _smallest_reaching(ladder, measure, 0.95) == expected
        assert len(measured) < len(ladder)  # never the whole ladder
    assert _smallest_reaching(ladder, lambda _: 0.5, 0.95) == 4096  # none reaches it
