"""A build's metadata: sources, schema, the file per partition, incremental reuse, refusals.

Builds run on real photos with the real model into a file:// store (as test_build.py);
the S3 tags path is in tests/integration/indexer/test_metadata_s3.py.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from simsearch.common.errors import ConfigError, InvalidParameter, ObjectNotFound
from simsearch.common.layout import IndexLayout
from simsearch.common.metadata import BUILTIN_FIELDS
from simsearch.common.metatable import open_table
from simsearch.common.storage import open_store
from simsearch.indexer.build import BuildOptions, build
from simsearch.indexer.embedding import Chunk, LocalBackend
from simsearch.indexer.import_h5 import import_h5
from simsearch.indexer.metadata import (
    KEY_FIELDS,
    Metadata,
    collect_metadata,
    partition_table,
    read_sidecar,
)
from simsearch.indexer.scan import is_image_key, scan_images
from tests.support.metatables import read_partitions, rows_by_key
from tests.unit.indexer.test_build import copy_samples


def jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


@pytest.fixture
def images_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    copy_samples(folder, 0, 12)
    return folder


def keys_of(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.jpg"))


# ---- sources


def test_sidecars_are_not_images() -> None:
    assert not is_image_key("metadata.jsonl") and not is_image_key("metadata.csv")


def test_collect_merges_builtins_and_the_sidecar(images_dir: Path) -> None:
    keys = keys_of(images_dir)
    (images_dir / "metadata.jsonl").write_text(
        jsonl(
            [
                {"key": keys[0], "label": "a", "stars": 4, "taken": "2024-05-01T10:00:00Z"},
                {"key": keys[1], "label": "b", "stars": 4.5},
                {"key": "no/such/image.jpg", "label": "c"},
                {"key": "notes.txt", "label": "d"},
            ]
        )
    )
    store = open_store(str(images_dir))
    scanned = scan_images(store)
    metadata = collect_metadata(store, scanned, read_sidecar(store, None), progress=False)
    assert metadata.schema == {
        **BUILTIN_FIELDS,
        "label": "string",
        "stars": "float",
        "taken": "time",
    }
    assert metadata.sidecar == "metadata.jsonl" and metadata.ignored == 2
    first = metadata.row(keys[0])
    stat = os.stat(images_dir / keys[0])
    assert first["size"] == stat.st_size and first["content_type"] == "image/jpeg"
    assert first["mtime"] == datetime.fromtimestamp(stat.st_mtime, UTC)
    assert first["label"] == "a" and first["stars"] == 4
    assert "label" not in metadata.row(keys[2])  # no sidecar row: no user fields
    assert set(metadata.rows) == set(keys)


def test_the_first_sidecar_name_wins_and_a_named_one_replaces_both(
    images_dir: Path, tmp_path: Path
) -> None:
    store = open_store(str(images_dir))
    assert read_sidecar(store, None) is None
    (images_dir / "metadata.csv").write_text("key,label\na.jpg,csv\n")
    assert read_sidecar(store, None) == ("metadata.csv", b"key,label\na.jpg,csv\n")
    (images_dir / "metadata.jsonl").write_text('{"key": "a.jpg"}\n')
    assert read_sidecar(store, None) == ("metadata.jsonl", b'{"key": "a.jpg"}\n')
    other = tmp_path / "elsewhere" / "labels.csv"
    other.parent.mkdir()
    other.write_text("key,label\n")
    assert read_sidecar(store, str(other)) == ("labels.csv", b"key,label\n")
    assert read_sidecar(store, other.as_uri()) == ("labels.csv", b"key,label\n")
    with pytest.raises(ObjectNotFound):
        read_sidecar(store, str(tmp_path / "missing.jsonl"))
    with pytest.raises(ConfigError, match=r"\.jsonl or \.csv"):
        read_sidecar(store, str(tmp_path / "labels.txt"))


def test_tags_need_an_s3_store(images_dir: Path) -> None:
    store = open_store(str(images_dir))
    with pytest.raises(ConfigError, match="S3 object tags"):
        collect_metadata(store, scan_images(store), None, tags=True, progress=False)


def test_partition_table_follows_the_given_order(tmp_path: Path) -> None:
    metadata = Metadata(
        schema={"key": "string", "content_type": "string", "n": "int"},
        rows={"b.png": {"key": "b.png", "content_type": "image/png", "n": 2}},
    )
    path = tmp_path / "t.arrow"
    partition_table(path, np.array([9, 4]), ["b.png", "a.jpg"], metadata)
    table = open_table(path, np.array([9, 4]))
    assert table.column("key").to_pylist() == ["b.png", "a.jpg"]
    assert table.column("n").to_pylist() == [2, None]
    assert table.column("content_type").to_pylist() == ["image/png", "image/jpeg"]
    with pytest.raises(InvalidParameter):
        partition_table(path, np.array([1]), [], metadata)


# ---- builds


class Refusing:
    """A backend that must not be called: the build has to stop before embedding."""

    def __init__(self, inner: LocalBackend) -> None:
        self.model = inner.model

    def embed(self, keys: list[str]) -> Chunk:
        raise AssertionError("embedding started before the sidecar was checked")


def options(tmp_path: Path) -> BuildOptions:
    return BuildOptions(partitions=3, chunk=8, workdir=tmp_path / "work", progress=False)


def published_rows(layout: IndexLayout, tmp_path: Path, name: str) -> dict[str, dict[str, Any]]:
    folder = tmp_path / name
    folder.mkdir()
    return rows_by_key(read_partitions(layout, layout.load_manifest(), folder))


def test_a_build_writes_aligned_metadata_and_reuses_unchanged_files(
    images_dir: Path, tmp_path: Path
) -> None:
    keys = keys_of(images_dir)
    sidecar = images_dir / "metadata.jsonl"
    sidecar.write_text(
        jsonl([{"key": k, "label": k.split("/")[0], "n": i} for i, k in enumerate(keys)])
    )
    images = open_store(str(images_dir))
    layout = IndexLayout(open_store(str(tmp_path / "store")), "photos")
    backend = LocalBackend(images, workers=2, batch=8)

    first = build(images, layout, backend, options(tmp_path))
    manifest = layout.load_manifest()
    assert manifest.metadata == {**BUILTIN_FIELDS, "label": "string", "n": "int"}
    assert first.metadata["fields"] == manifest.metadata and first.metadata["ignored_rows"] == 0
    rows = published_rows(layout, tmp_path, "v1")
    assert sorted(rows) == keys
    assert rows[keys[3]]["n"] == 3 and rows[keys[3]]["label"] == keys[3].split("/")[0]
    assert rows[keys[3]]["size"] == (images_dir / keys[3]).stat().st_size

    assert build(images, layout, backend, options(tmp_path)).unchanged  # nothing changed

    changed = keys[5]
    lines = sidecar.read_text().splitlines()
    lines[5] = json.dumps({"key": changed, "label": "relabelled", "n": 5})
    sidecar.write_text("\n".join(lines) + "\n")
    second = build(images, layout, backend, options(tmp_path))
    assert not second.unchanged and second.embedded == 0
    newer = layout.load_manifest()
    assert newer.version == second.version and newer.parent == manifest.version
    assert published_rows(layout, tmp_path, "v2")[changed]["label"] == "relabelled"
    for old, new in zip(manifest.partition_files, newer.partition_files, strict=True):
        assert new.index == old.index and new.features == old.features  # vectors reused
        holds_changed = changed in rows_in(layout, new.features.key, tmp_path)
        assert (new.metadata != old.metadata) == holds_changed  # only that table is new


def rows_in(layout: IndexLayout, features_key: str, tmp_path: Path) -> list[str]:
    path = tmp_path / "probe.h5"
    layout.store.download_file(layout.root + features_key, path)
    with h5py.File(path, "r") as h5:
        return [p.decode() if isinstance(p, bytes) else str(p) for p in h5["paths"][:]]


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("metadata.jsonl", b'{"key": "a.jpg"}\n{"key": "a.jpg"}\n', "given twice"),
        ("metadata.jsonl", b'{"key": "a.jpg", "n": 1}\nnot json\n', "line 2: not JSON"),
        ("metadata.csv", b"key,n\n\xff\xfe,1\n", "not UTF-8"),
        ("metadata.jsonl", None, "has both int and string"),
        ("metadata.jsonl", None, "built-in"),
    ],
)
def test_a_bad_sidecar_fails_the_build_before_embedding_or_publishing(
    images_dir: Path, tmp_path: Path, name: str, content: bytes | None, words: str
) -> None:
    keys = keys_of(images_dir)
    if content is None and words == "built-in":
        content = jsonl([{"key": keys[0], "size": 3}]).encode()
    elif content is None:
        content = jsonl([{"key": keys[0], "n": 1}, {"key": keys[1], "n": "one"}]).encode()
    (images_dir / name).write_bytes(content)
    images = open_store(str(images_dir))
    layout = IndexLayout(open_store(str(tmp_path / "store")))
    backend = Refusing(LocalBackend(images, workers=1, batch=8))
    with pytest.raises(InvalidParameter) as err:
        build(images, layout, backend, options(tmp_path))
    assert words in err.value.reason
    assert not layout.store.exists("index/default/CURRENT")


def test_the_cli_reports_a_bad_sidecar_like_other_build_errors(
    images_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from simsearch.cli import main

    (tmp_path / "labels.jsonl").write_text('{"key": "x.jpg", "a": 1}\n{"key": "x.jpg"}\n')
    args = ["index", "build", "--images", str(images_dir), "--store", str(tmp_path / "s")]
    code = main([*args, "--no-progress", "--metadata", str(tmp_path / "labels.jsonl")])
    assert code == 1
    assert "labels.jsonl line 2: key 'x.jpg' is given twice" in capsys.readouterr().err


def test_import_h5_records_key_and_content_type_only(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    paths = [f"static/images/{i}.{'png' if i % 2 else 'jpg'}" for i in range(40)]
    old = tmp_path / "features.h5"
    with h5py.File(old, "w") as h5:
        h5.create_dataset("features", data=rng.standard_normal((40, 16)).astype(np.float32))
        h5.create_dataset("paths", data=np.array(paths, dtype="S"))
    layout = IndexLayout(open_store(str(tmp_path / "store")))
    manifest = import_h5(old, layout, model="test", partitions=4)
    assert manifest.metadata == KEY_FIELDS
    rows = published_rows(layout, tmp_path, "imported")
    assert sorted(rows) == sorted(paths)
    assert rows["static/images/1.png"] == {
        "key": "static/images/1.png",
        "content_type": "image/png",
    }
