"""The index layout in an object store, against a directory and a real moto S3 server.

Covers the publish protocol (files, then manifest, then CURRENT), crashed builds staying
invisible, rollback, incremental builds referencing files in an older version's folder,
and garbage collection that must never delete such a file. The manifest's own validation
is in test_manifest.py.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import boto3.session
import pytest
from botocore.config import Config

from simsearch.common.errors import CorruptIndex, InvalidParameter, NotFound
from simsearch.common.layout import FEATURES_FILE, INDEX_FILE, TRAINED_FILE, IndexLayout
from simsearch.common.manifest import (
    FileRef,
    Manifest,
    PartitionInfo,
    verify_file,
)
from simsearch.common.storage import FileStore, ObjectStore, S3Options, S3Store
from tests.unit.common.test_manifest import MODEL, PARAMS, vid

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

# ------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def s3_client(s3_endpoint: str) -> S3Client:
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    return session.client(
        "s3", endpoint_url=s3_endpoint, config=Config(s3={"addressing_style": "path"})
    )


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    """A FileStore in tmp_path, or an S3Store under a prefix of a fresh moto bucket."""
    if request.param == "file":
        return FileStore(tmp_path / "store")
    endpoint: str = request.getfixturevalue("s3_endpoint")
    request.getfixturevalue("s3_env")
    client: S3Client = request.getfixturevalue("s3_client")
    bucket = f"layout-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=bucket)
    options = S3Options(endpoint_url=endpoint, max_attempts=2, read_timeout_s=10)
    return S3Store(bucket, "root/dir", options)


@pytest.fixture
def layout(store: ObjectStore) -> IndexLayout:
    return IndexLayout(store, "photos")


# -------------------------------------------------------------------------- helpers


def _local(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / "work" / uuid.uuid4().hex / name
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    return path


def build(
    layout: IndexLayout,
    tmp_path: Path,
    version: str,
    partitions: int = 2,
    reuse: dict[int, PartitionInfo] | None = None,
    parent: str | None = None,
) -> Manifest:
    """Upload a version's files the way the indexer does; return its (unpublished) manifest."""
    reuse = reuse or {}
    trained = layout.upload(
        version, TRAINED_FILE, _local(tmp_path, TRAINED_FILE, f"T{version}".encode())
    )
    files: list[PartitionInfo] = []
    for p in range(partitions):
        if p in reuse:
            files.append(reuse[p])
            continue
        refs = [
            layout.upload(
                version,
                layout.partition_relative(p, name),
                _local(tmp_path, name, f"{name}:{version}:{p}:".encode() * (p + 1)),
            )
            for name in (INDEX_FILE, FEATURES_FILE)
        ]
        files.append(PartitionInfo(partition=p, count=p + 3, index=refs[0], features=refs[1]))
    return Manifest(
        index_name=layout.name,
        version=version,
        created=datetime.now(UTC),
        model=MODEL,
        params=PARAMS,
        partitions=partitions,
        total=sum(info.count for info in files),
        dtype="float16",
        trained=trained,
        partition_files=files,
        source="s3://images/cats",
        parent=parent,
    )


def keys(store: ObjectStore) -> set[str]:
    return {info.key for info in store.list()}


@pytest.mark.parametrize(
    "name", ["", "Upper", "-lead", "_lead", "a/b", "a" * 64, "..", "a b", "ü", "a.b"]
)
def test_bad_index_names_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidParameter, match="invalid index name"):
        IndexLayout(FileStore(tmp_path), name)


@pytest.mark.parametrize("name", ["default", "a", "0", "a" * 63, "my-index_2"])
def test_good_index_names(tmp_path: Path, name: str) -> None:
    assert IndexLayout(FileStore(tmp_path), name).root == f"index/{name}/"


def test_keys(tmp_path: Path) -> None:
    layout = IndexLayout(FileStore(tmp_path))
    v = vid(0)
    assert layout.version_prefix(v) == f"index/default/versions/{v}/"
    assert layout.manifest_key(v) == f"index/default/versions/{v}/manifest.json"
    assert layout.trained_key(v) == f"index/default/versions/{v}/trained.faiss"
    assert (
        layout.partition_key(v, 3, INDEX_FILE)
        == f"index/default/versions/{v}/partitions/0003/index.faiss"
    )
    assert layout.current_key() == "index/default/CURRENT"
    ref = FileRef(key=f"versions/{v}/partitions/0003/features.h5", size=0, sha256="0" * 64)
    assert layout.resolve(ref) == f"index/default/{ref.key}"
    for bad in ("v1", "../x", f"{v}/x"):
        with pytest.raises(InvalidParameter):
            layout.version_prefix(bad)
    with pytest.raises(InvalidParameter):
        layout.partition_key(v, -1, INDEX_FILE)
    with pytest.raises(InvalidParameter):
        layout.partition_key(v, 1, "a/b")
    with pytest.raises(InvalidParameter):
        layout.upload(v, "../escape", tmp_path)


# ------------------------------------------------------------- publish and reading


def test_publish_round_trip(layout: IndexLayout, tmp_path: Path) -> None:
    assert layout.current() is None
    assert layout.versions() == []
    with pytest.raises(NotFound, match="no published version"):
        layout.load_manifest()
    v = vid(0)
    manifest = build(layout, tmp_path, v, partitions=3)
    assert layout.current() is None  # uploaded but not published: invisible
    layout.publish(manifest)
    assert layout.current() == v
    assert layout.versions() == [v]
    assert layout.load_manifest() == manifest
    assert layout.load_manifest(v) == manifest
    store = layout.store
    expected = {
        layout.current_key(),
        layout.manifest_key(v),
        layout.trained_key(v),
        *(layout.partition_key(v, p, f) for p in range(3) for f in (INDEX_FILE, FEATURES_FILE)),
    }
    assert keys(store) == expected
    assert store.get(layout.current_key()).decode().strip() == v
    for ref in manifest.files():
        assert store.size(layout.resolve(ref)) == ref.size
        local = tmp_path / "dl" / ref.key
        store.download_file(layout.resolve(ref), local)
        verify_file(local, ref)
    # publishing the same manifest again is a harmless retry
    layout.publish(manifest)
    assert layout.current() == v


def test_publish_second_version_flips_current(layout: IndexLayout, tmp_path: Path) -> None:
    v1, v2 = vid(0), vid(1)
    m1 = build(layout, tmp_path, v1)
    layout.publish(m1)
    m2 = build(layout, tmp_path, v2, parent=v1)
    layout.publish(m2)
    assert layout.current() == v2
    assert layout.versions() == [v1, v2]
    assert layout.load_manifest(v1) == m1
    # rollback: re-publishing the old, unchanged manifest points CURRENT back at it
    layout.publish(m1)
    assert layout.current() == v1
    assert layout.versions() == [v1, v2]


def test_published_version_never_changes(layout: IndexLayout, tmp_path: Path) -> None:
    v = vid(0)
    manifest = build(layout, tmp_path, v)
    layout.publish(manifest)
    changed = manifest.model_copy(update={"source": "s3://elsewhere"})
    with pytest.raises(InvalidParameter, match="already published"):
        layout.publish(changed)
    assert layout.load_manifest(v) == manifest


def test_publish_refuses_a_manifest_of_another_index(layout: IndexLayout, tmp_path: Path) -> None:
    manifest = build(layout, tmp_path, vid(0))
    other = IndexLayout(layout.store, "other")
    with pytest.raises(InvalidParameter, match="cannot be published"):
        other.publish(manifest)
    assert other.current() is None


def test_crashed_build_is_invisible(layout: IndexLayout, tmp_path: Path) -> None:
    v1, v2 = vid(0), vid(1)
    layout.publish(build(layout, tmp_path, v1))
    build(layout, tmp_path, v2)  # crashed before publish: files but no manifest
    assert any(k.startswith(layout.version_prefix(v2)) for k in keys(layout.store))
    assert layout.versions() == [v1]
    assert layout.current() == v1
    with pytest.raises(NotFound, match=f"version {v2} .* is not published"):
        layout.load_manifest(v2)
    with pytest.raises(NotFound):
        layout.load_manifest(vid(9))  # never built at all


def test_publish_refuses_missing_or_wrong_size_files(layout: IndexLayout, tmp_path: Path) -> None:
    v1, v2 = vid(0), vid(1)
    layout.publish(build(layout, tmp_path, v1))
    m2 = build(layout, tmp_path, v2, partitions=3)
    store = layout.store
    store.delete(layout.partition_key(v2, 1, FEATURES_FILE))
    store.put(layout.partition_key(v2, 2, INDEX_FILE), b"short")
    with pytest.raises(CorruptIndex) as info:
        layout.publish(m2)
    reason = info.value.reason
    assert f"{layout.partition_key(v2, 1, FEATURES_FILE)} is missing" in reason
    assert f"{layout.partition_key(v2, 2, INDEX_FILE)} has 5 bytes" in reason
    assert layout.current() == v1
    assert layout.versions() == [v1]
    assert not store.exists(layout.manifest_key(v2))


def test_corrupt_current_and_manifest(layout: IndexLayout, tmp_path: Path) -> None:
    v1, v2 = vid(0), vid(1)
    m1 = build(layout, tmp_path, v1)
    layout.publish(m1)
    store = layout.store
    store.put(layout.manifest_key(v2), b"{not json")
    with pytest.raises(CorruptIndex, match="not a valid manifest"):
        layout.load_manifest(v2)
    data = json.loads(m1.model_dump_json())
    data["total"] = 999
    store.put(layout.manifest_key(v2), json.dumps(data).encode())
    with pytest.raises(CorruptIndex, match="total"):
        layout.load_manifest(v2)
    store.put(layout.manifest_key(v2), m1.model_dump_json().encode())  # v1's, under v2
    with pytest.raises(CorruptIndex, match="describes version"):
        layout.load_manifest(v2)
    store.put(layout.current_key(), b"garbage\n")
    with pytest.raises(CorruptIndex, match="not a version id"):
        layout.current()


# -------------------------------------------------------------------------- rollback


def test_rollback_steps_back_one_published_version_at_a_time(
    layout: IndexLayout, tmp_path: Path
) -> None:
    """Without a version: the newest published one older than CURRENT; crashed builds are
    skipped; an explicit newer version undoes the rollback; the live one is a no-op."""
    v = [vid(i) for i in range(4)]
    for i in (0, 1, 3):
        layout.publish(build(layout, tmp_path, v[i], partitions=1))
    build(layout, tmp_path, v[2], partitions=1)  # crashed between v1 and v3: never a target
    assert layout.current() == v[3]
    assert layout.rollback() == v[1]
    assert layout.current() == v[1]
    assert layout.store.get(layout.current_key()) == f"{v[1]}\n".encode()  # publish's format
    assert layout.rollback() == v[0]
    with pytest.raises(NotFound, match=f"no published version older than the live {v[0]}"):
        layout.rollback()
    assert layout.current() == v[0]
    assert layout.rollback(v[3]) == v[3]  # forward again, e.g. to undo a rollback
    assert layout.rollback(v[3]) == v[3]  # already live: harmless
    assert layout.current() == v[3]
    assert layout.versions() == [v[0], v[1], v[3]]  # a rollback deletes nothing


def test_rollback_refusals_leave_current_alone(layout: IndexLayout, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no live version"):
        layout.rollback()
    v = [vid(i) for i in range(5)]
    for i in (0, 1, 2):
        layout.publish(build(layout, tmp_path, v[i], partitions=2))
    build(layout, tmp_path, v[3], partitions=1)  # crashed build: files, no manifest
    store = layout.store
    store.put(layout.manifest_key(v[4]), b"{broken")
    store.delete(layout.partition_key(v[1], 1, INDEX_FILE))  # damaged by hand
    cases: list[tuple[str, type[Exception], str]] = [
        ("v2026", InvalidParameter, "invalid index version id"),
        (vid(9), NotFound, "not published"),  # never built
        (v[3], NotFound, "not published"),
        (v[4], CorruptIndex, "not a valid manifest"),
        (v[1], CorruptIndex, "refusing to roll back to version .* is missing"),
    ]
    for target, error, words in cases:
        with pytest.raises(error, match=words):
            layout.rollback(target)
        assert layout.current() == v[2]
    with pytest.raises(CorruptIndex, match="is missing"):
        layout.rollback()  # the default target is v1, damaged: not silently v0
    assert layout.current() == v[2]


def test_rollback_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`simsearch index rollback`: JSON on success, one line on stderr and exit 1 on refusal."""
    from simsearch.cli import main

    root = tmp_path / "store"
    layout = IndexLayout(FileStore(root))
    v1, v2 = vid(0), vid(1)
    for v in (v1, v2):
        layout.publish(build(layout, tmp_path, v, partitions=1))
    assert main(["index", "rollback", "--store", str(root)]) == 0
    assert json.loads(capsys.readouterr().out) == {"previous": v2, "current": v1}
    assert layout.current() == v1

    assert main(["index", "rollback", "--store", str(root)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("simsearch index rollback: ")
    assert "no published version older" in captured.err

    assert main(["index", "rollback", "nope", "--store", str(root)]) == 1
    assert "invalid index version id" in capsys.readouterr().err
    assert main(["index", "rollback", vid(5), "--store", str(root)]) == 1
    assert "not published" in capsys.readouterr().err
    assert main(["index", "rollback", "--store", str(root), "--index", "other"]) == 1
    assert "no live version" in capsys.readouterr().err
    assert main(["index", "rollback", "--store", str(root), "--index", "Bad Name"]) == 1
    assert "invalid index name" in capsys.readouterr().err

    assert main(["index", "rollback", v2, "--store", str(root)]) == 0
    assert json.loads(capsys.readouterr().out) == {"previous": v1, "current": v2}
    assert layout.current() == v2


# -------------------------------------------------------------------------------- gc


def test_incremental_reuse_survives_gc(layout: IndexLayout, tmp_path: Path) -> None:
    store = layout.store
    v1, v2, v3 = vid(0), vid(1), vid(2)
    m1 = build(layout, tmp_path, v1, partitions=3)
    layout.publish(m1)
    # v2 changes only partition 1: partitions 0 and 2 point into v1's folder
    m2 = build(
        layout,
        tmp_path,
        v2,
        partitions=3,
        reuse={0: m1.partition_files[0], 2: m1.partition_files[2]},
        parent=v1,
    )
    assert m2.partition_files[0].index.key.startswith(f"versions/{v1}/")
    layout.publish(m2)
    assert layout.gc(keep=1) == [v1]
    assert layout.versions() == [v2]
    assert not store.exists(layout.manifest_key(v1))
    assert not store.exists(layout.trained_key(v1))
    assert not store.exists(layout.partition_key(v1, 1, INDEX_FILE))
    assert not store.exists(layout.partition_key(v1, 1, FEATURES_FILE))
    for p in (0, 2):  # referenced by v2: kept in v1's folder
        for name in (INDEX_FILE, FEATURES_FILE):
            assert store.exists(layout.partition_key(v1, p, name))
    assert layout.load_manifest() == m2
    for ref in m2.files():
        assert store.size(layout.resolve(ref)) == ref.size
    assert layout.gc(keep=1) == []  # idempotent: v1's leftovers are all referenced

    # a full rebuild v3 references nothing older: everything of v1 and v2 goes
    layout.publish(build(layout, tmp_path, v3, partitions=3, parent=v2))
    assert layout.gc(keep=1) == [v1, v2]
    assert {k for k in keys(store) if "/versions/" in k} == {
        k for k in keys(store) if k.startswith(layout.version_prefix(v3))
    }
    assert len(keys(store)) == 1 + 1 + 1 + 3 * 2  # CURRENT, manifest, trained, partitions


def test_gc_keep_semantics_and_abandoned_folders(layout: IndexLayout, tmp_path: Path) -> None:
    store = layout.store
    v = [vid(i) for i in range(7)]
    for i in (0, 1, 3, 4):
        layout.publish(build(layout, tmp_path, v[i], partitions=1))
    build(layout, tmp_path, v[2], partitions=1)  # crashed between published versions
    build(layout, tmp_path, v[5], partitions=1)  # newer than the newest published: running
    store.put(layout.root + "versions/not-a-version/x", b"x")  # not ours: never touched
    store.put(layout.root + "notes.txt", b"x")
    with pytest.raises(InvalidParameter):
        layout.gc(keep=0)
    with pytest.raises(InvalidParameter):
        layout.gc(keep=-1)
    assert layout.versions() == [v[0], v[1], v[3], v[4]]

    assert layout.gc(keep=2) == [v[0], v[1], v[2]]
    assert layout.versions() == [v[3], v[4]]
    assert layout.current() == v[4]
    remaining = {k.split("/")[3] for k in keys(store) if "/versions/" in k}
    assert remaining == {v[3], v[4], v[5], "not-a-version"}
    assert store.exists(layout.root + "notes.txt")
    assert layout.gc(keep=2) == []

    # CURRENT rolled back to v3: keep=1 keeps the newest (v4) and the live one (v3)
    layout.publish(layout.load_manifest(v[3]))
    assert layout.gc(keep=1) == []
    assert layout.versions() == [v[3], v[4]]
    # back to v4: now v3 goes
    layout.publish(layout.load_manifest(v[4]))
    assert layout.gc(keep=1) == [v[3]]
    assert layout.versions() == [v[4]]
    assert store.exists(layout.trained_key(v[5]))  # the running build is still untouched


def test_gc_deletes_nothing_when_a_kept_manifest_is_unreadable(
    layout: IndexLayout, tmp_path: Path
) -> None:
    v1, v2 = vid(0), vid(1)
    layout.publish(build(layout, tmp_path, v1, partitions=1))
    layout.publish(build(layout, tmp_path, v2, partitions=1))
    layout.store.put(layout.manifest_key(v2), b"{broken")
    before = keys(layout.store)
    with pytest.raises(CorruptIndex, match="deleted nothing"):
        layout.gc(keep=1)
    assert keys(layout.store) == before


def test_gc_on_an_empty_index(layout: IndexLayout, tmp_path: Path) -> None:
    assert layout.gc(keep=3) == []
    v = vid(0)
    build(layout, tmp_path, v, partitions=1)  # only an in-progress build exists
    assert layout.gc(keep=1) == []
    assert layout.store.exists(layout.trained_key(v))
