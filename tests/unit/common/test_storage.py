"""ObjectStore contract, run against a directory and against a real moto S3 server.

The S3 half talks to moto over loopback HTTP with the real boto3 stack (no in-process
patching), so signing, multipart uploads, HTTP error codes and retries are the real ones.
"""

from __future__ import annotations

import ast
import importlib
import os
import random
import re
import time
import types
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import boto3.session
import pytest
from botocore.config import Config

import simsearch.common.storage as storage_package
from simsearch.common.errors import (
    ConfigError,
    InvalidParameter,
    ObjectNotFound,
    PayloadTooLarge,
    StorageError,
)
from simsearch.common.http import status_for
from simsearch.common.storage import (
    FileStore,
    ObjectInfo,
    ObjectStore,
    S3Options,
    S3Store,
    is_uri,
    open_store,
    split_object_uri,
)
from tests.support.paths import ROOT
from tests.support.s3server import free_port

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

PREFIX = "root/dir"  # the S3 store lives under a prefix, so key joining is exercised
BIG = 12 * 1024 * 1024  # over the 8 MiB multipart threshold: two parts


def _options(endpoint: str) -> S3Options:
    return S3Options(endpoint_url=endpoint, max_attempts=2, connect_timeout_s=2, read_timeout_s=10)


@pytest.fixture(scope="session")
def s3_client(s3_endpoint: str) -> S3Client:
    """A plain boto3 client on moto, for setting up and inspecting buckets directly.

    Session-scoped (building a client costs ~0.2 s), so it carries its fake credentials
    itself instead of relying on the function-scoped `s3_env`.
    """
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    return session.client(
        "s3", endpoint_url=s3_endpoint, config=Config(s3={"addressing_style": "path"})
    )


@pytest.fixture
def bucket(s3_client: S3Client) -> str:
    """A fresh, empty bucket per test so tests never see each other's objects."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_store(s3_endpoint: str, bucket: str, s3_env: None) -> S3Store:
    return S3Store(bucket, PREFIX, _options(s3_endpoint))


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    """Each contract test runs on both backends; moto starts only when an s3 test runs."""
    if request.param == "file":
        return FileStore(tmp_path / "store")
    s3: S3Store = request.getfixturevalue("s3_store")
    return s3


def _payload(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


# ------------------------------------------------------------------ both backends


def test_put_get_round_trip(store: ObjectStore) -> None:
    data = _payload(1000)
    store.put("images/a.bin", data)
    assert store.get("images/a.bin") == data
    store.put("images/a.bin", b"replaced")
    assert store.get("images/a.bin") == b"replaced"
    store.put("empty", b"")
    assert store.get("empty") == b""
    assert store.url_for("images/a.bin") == f"{store.uri}/images/a.bin"


def test_get_limited(store: ObjectStore) -> None:
    data = _payload(100)
    store.put("k", data)
    assert store.get_limited("k", 100) == data
    assert store.get_limited("k", 10_000) == data
    with pytest.raises(PayloadTooLarge, match="100 bytes"):
        store.get_limited("k", 99)
    with pytest.raises(PayloadTooLarge):
        store.get_limited("k", 0)
    with pytest.raises(ObjectNotFound):
        store.get_limited("missing", 10)
    with pytest.raises(InvalidParameter):
        store.get_limited("k", -1)


def test_upload_download_big_file(
    store: ObjectStore, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    src = tmp_path / "big.bin"
    data = _payload(BIG, seed=1)
    src.write_bytes(data)
    store.upload_file("shards/big.bin", src)
    assert store.size("shards/big.bin") == BIG

    dest = tmp_path / "out" / "nested" / "big.bin"  # parents are created
    store.download_file("shards/big.bin", dest)
    assert dest.read_bytes() == data
    assert os.listdir(dest.parent) == ["big.bin"]  # no temp file left behind

    dest.write_bytes(b"stale")
    store.download_file("shards/big.bin", dest)  # replaces an existing file
    assert dest.read_bytes() == data

    if isinstance(store, S3Store):
        client: S3Client = request.getfixturevalue("s3_client")
        bucket: str = request.getfixturevalue("bucket")
        etag = client.head_object(Bucket=bucket, Key=f"{PREFIX}/shards/big.bin")["ETag"]
        assert etag.strip('"').endswith("-2"), f"expected a 2-part multipart ETag, got {etag}"


def test_upload_missing_source(store: ObjectStore, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        store.upload_file("x", tmp_path / "does-not-exist")
    assert not store.exists("x")


def test_list_prefix_and_nesting(store: ObjectStore) -> None:
    keys = ["a.txt", "b/c.txt", "b/d/e.txt", "bx.txt", "b-z.txt"]
    for i, key in enumerate(keys):
        store.put(key, b"x" * (i + 1))
    sizes = {key: i + 1 for i, key in enumerate(keys)}

    def listed(prefix: str = "") -> list[ObjectInfo]:
        return list(store.list(prefix))

    assert listed() == [ObjectInfo(k, sizes[k]) for k in sorted(keys)]
    assert [o.key for o in listed("b/")] == ["b/c.txt", "b/d/e.txt"]
    # a plain string prefix, in S3's key order: "-" (0x2d) < "/" (0x2f) < "x"
    assert [o.key for o in listed("b")] == ["b-z.txt", "b/c.txt", "b/d/e.txt", "bx.txt"]
    assert [o.key for o in listed("b/d")] == ["b/d/e.txt"]
    assert [o.key for o in listed("b/d/e.txt")] == ["b/d/e.txt"]
    assert listed("nope/") == []
    assert listed("zzz") == []


def test_listing_says_when_each_object_was_modified(store: ObjectStore) -> None:
    before = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=2)
    store.put("m/a.txt", b"x")
    (info,) = list(store.list("m/"))
    assert info.mtime is not None and info.mtime.utcoffset() == timedelta(0)
    assert before <= info.mtime <= datetime.now(UTC) + timedelta(seconds=2)
    assert info == ObjectInfo("m/a.txt", 1)  # mtime is not part of equality


def test_s3_object_tags(s3_store: S3Store, s3_client: S3Client, bucket: str) -> None:
    s3_store.put("t.jpg", b"x")
    assert s3_store.tags("t.jpg") == {}
    s3_client.put_object_tagging(
        Bucket=bucket,
        Key=f"{PREFIX}/t.jpg",
        Tagging={"TagSet": [{"Key": "camera", "Value": "x100"}, {"Key": "a b", "Value": ""}]},
    )
    assert s3_store.tags("t.jpg") == {"camera": "x100", "a b": ""}
    with pytest.raises(ObjectNotFound):
        s3_store.tags("missing.jpg")


def test_exists_size_delete(store: ObjectStore) -> None:
    assert not store.exists("dir/k.bin")
    store.put("dir/k.bin", b"12345")
    assert store.exists("dir/k.bin")
    assert store.size("dir/k.bin") == 5
    assert not store.exists("dir")  # a "directory" is not an object
    store.delete("dir/k.bin")
    assert not store.exists("dir/k.bin")
    store.delete("dir/k.bin")  # missing key: not an error
    store.delete("never/existed")
    with pytest.raises(ObjectNotFound):
        store.size("dir/k.bin")


def test_missing_key_is_object_not_found(store: ObjectStore, tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFound, match=re.escape("nothing/here.jpg")) as info:
        store.get("nothing/here.jpg")
    assert status_for(info.value) == 404
    assert store.url_for("nothing/here.jpg") in str(info.value)
    dest = tmp_path / "dl" / "x.bin"
    with pytest.raises(ObjectNotFound):
        store.download_file("nothing/here.jpg", dest)
    assert not dest.exists()
    assert not dest.parent.exists() or os.listdir(dest.parent) == []


@pytest.mark.parametrize(
    "key", ["", "/abs", "../x", "a/../../x", "a/./b", "a//b", "a\\b", "..", "a/"]
)
def test_bad_keys_refused(store: ObjectStore, key: str) -> None:
    with pytest.raises(InvalidParameter):
        store.put(key, b"x")
    with pytest.raises(InvalidParameter):
        store.get(key)


def test_concurrent_use_of_one_store(store: ObjectStore) -> None:
    def roundtrip(i: int) -> bool:
        data = _payload(2000, seed=i)
        store.put(f"c/{i}", data)
        return store.get(f"c/{i}") == data

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(roundtrip, range(32)))
    assert len(list(store.list("c/"))) == 32


# ------------------------------------------------------------------- file store


def test_file_store_refuses_path_traversal(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "root")
    (tmp_path / "secret").write_bytes(b"secret")
    for key in ["../secret", "a/../../secret", str(tmp_path / "secret")]:
        with pytest.raises(InvalidParameter):
            store.get(key)
        with pytest.raises(InvalidParameter):
            store.put(key, b"overwritten")
        with pytest.raises(InvalidParameter):
            store.delete(key)
    with pytest.raises(InvalidParameter):
        list(store.list("../"))
    assert (tmp_path / "secret").read_bytes() == b"secret"


def test_file_store_put_is_atomic_and_list_skips_temp_files(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.put("a/b.bin", b"data")
    assert os.listdir(tmp_path / "a") == ["b.bin"]
    # an interrupted write from another process leaves a temp file; it is no object
    (tmp_path / "a" / ".c.bin.0123456789ab.simsearch-tmp").write_bytes(b"partial")
    assert [o.key for o in store.list()] == ["a/b.bin"]


def test_file_store_relative_root_refused() -> None:
    with pytest.raises(ConfigError):
        FileStore("relative/dir")


# --------------------------------------------------------------------- S3 only


def test_s3_keys_live_under_the_prefix(
    s3_store: S3Store, s3_client: S3Client, bucket: str, s3_endpoint: str
) -> None:
    s3_store.put("k.txt", b"in")
    sibling = S3Store(bucket, "root/dirx", _options(s3_endpoint))  # shares "root/dir" chars
    sibling.put("k.txt", b"out")
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert sorted(keys) == ["root/dir/k.txt", "root/dirx/k.txt"]
    assert [o.key for o in s3_store.list()] == ["k.txt"]
    assert s3_store.uri == f"s3://{bucket}/root/dir"
    assert s3_store.url_for("a/b.jpg") == f"s3://{bucket}/root/dir/a/b.jpg"


def test_s3_missing_bucket_is_storage_error(s3_endpoint: str, s3_env: None, tmp_path: Path) -> None:
    store = S3Store("no-such-bucket", "p", _options(s3_endpoint))
    src = tmp_path / "f"
    src.write_bytes(b"x")
    calls: list[Callable[[], object]] = [
        lambda: store.get("k"),
        lambda: store.get_limited("k", 10),
        lambda: store.put("k", b"x"),
        lambda: store.exists("k"),
        lambda: store.size("k"),
        lambda: list(store.list()),
        lambda: store.delete("k"),
        lambda: store.upload_file("k", src),
        lambda: store.download_file("k", tmp_path / "out"),
    ]
    for call in calls:
        with pytest.raises(StorageError, match="bucket 'no-such-bucket' does not exist") as info:
            call()
        assert not isinstance(info.value, ObjectNotFound)


def test_s3_presigned_url(s3_store: S3Store, s3_endpoint: str, bucket: str) -> None:
    data = _payload(300)
    s3_store.put("img/a b.jpg", data)

    url = s3_store.presigned_get_url("img/a b.jpg", expires_s=60)
    assert url.startswith(f"{s3_endpoint}/{bucket}/root/dir/img/a%20b.jpg?")
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.read() == data

    public = s3_endpoint.replace("127.0.0.1", "localhost")
    public_url = s3_store.presigned_get_url("img/a b.jpg", 60, public_endpoint_url=public)
    assert public_url.startswith(f"{public}/{bucket}/root/dir/img/a%20b.jpg?")
    # signed for the public host (SigV4 covers Host), not a string-rewritten copy
    signature = parse_qs(urlsplit(url).query)["X-Amz-Signature"]
    assert parse_qs(urlsplit(public_url).query)["X-Amz-Signature"] != signature
    with urllib.request.urlopen(public_url, timeout=10) as resp:
        assert resp.read() == data

    with pytest.raises(InvalidParameter):
        s3_store.presigned_get_url("img/a b.jpg", expires_s=0)
    with pytest.raises(ConfigError):
        s3_store.presigned_get_url("img/a b.jpg", public_endpoint_url="minio:9000")


def test_s3_unreachable_endpoint_fails_fast(s3_env: None) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    options = S3Options(
        endpoint_url=endpoint, max_attempts=1, connect_timeout_s=0.5, read_timeout_s=0.5
    )
    store = open_store("s3://bucket/prefix", options)
    start = time.monotonic()
    for call in (
        lambda: store.get("k"),
        lambda: store.exists("k"),
        lambda: store.put("k", b"x"),
        lambda: list(store.list()),
    ):
        with pytest.raises(StorageError, match="cannot reach S3 endpoint") as info:
            call()
        assert endpoint in str(info.value)
        assert not isinstance(info.value, ObjectNotFound)
    assert time.monotonic() - start < 5.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"connect_timeout_s": 0},
        {"read_timeout_s": -1},
        {"max_pool_connections": 0},
        {"endpoint_url": "minio:9000"},
        {"region": ""},
    ],
)
def test_s3_options_validated(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        S3Options(**kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- parsing


def test_open_store_bare_path_and_file_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    bare = open_store("data/images")
    assert isinstance(bare, FileStore)
    assert bare.uri == (tmp_path / "data" / "images").as_uri()
    assert isinstance(open_store(str(tmp_path)), FileStore)

    uri = (tmp_path / "a dir").as_uri()  # percent-encoded space
    store = open_store(uri)
    assert isinstance(store, FileStore)
    assert store.uri == uri
    store.put("k", b"v")
    assert (tmp_path / "a dir" / "k").read_bytes() == b"v"
    assert open_store(f"file://localhost{tmp_path}").uri == tmp_path.as_uri()


def test_open_store_s3_uris(s3_env: None) -> None:
    plain = open_store("s3://bucket")
    assert isinstance(plain, S3Store)
    assert plain.uri == "s3://bucket"
    assert plain.url_for("a/b.jpg") == "s3://bucket/a/b.jpg"
    for uri in ("s3://bucket/a/b", "s3://bucket/a/b/", "s3://bucket//a//b"):
        store = open_store(uri, S3Options(endpoint_url="http://127.0.0.1:9"))
        assert isinstance(store, S3Store)
        assert store.uri == "s3://bucket/a/b"
        assert store.url_for("c.jpg") == "s3://bucket/a/b/c.jpg"


@pytest.mark.parametrize(
    "uri",
    [
        "http://host/x",
        "ftp://x/y",
        "s3://",
        "s3:/bucket",
        "s3://bucket/../x",
        "file://relative/x",
        "file:relative",
        "",
        "   ",
    ],
)
def test_open_store_refuses_bad_uris(uri: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_store(uri)
    assert repr(uri) in str(info.value)


def test_split_object_uri(tmp_path: Path) -> None:
    assert split_object_uri("s3://bucket/a/b.jpg") == ("s3://bucket", "a/b.jpg")
    assert split_object_uri("s3://bucket/b.jpg") == ("s3://bucket", "b.jpg")
    assert split_object_uri("file:///x/y/b.jpg") == ("file:///x/y", "b.jpg")
    assert split_object_uri("/x/y/b.jpg") == ("file:///x/y", "b.jpg")
    for bad in (
        "s3://bucket",
        "s3://bucket/",
        "s3://bucket/a//b",
        "http://h/x.jpg",
        "file:///x/y/",
        "file:///",
        "",
    ):
        with pytest.raises(InvalidParameter):
            split_object_uri(bad)


def test_split_object_uri_round_trips_through_open_store(
    store: ObjectStore, s3_endpoint_or_none: S3Options | None
) -> None:
    store.put("dir with space/b c.jpg", b"payload")
    root, key = split_object_uri(store.url_for("dir with space/b c.jpg"))
    assert open_store(root, s3_endpoint_or_none).get(key) == b"payload"


@pytest.fixture
def s3_endpoint_or_none(store: ObjectStore, request: pytest.FixtureRequest) -> S3Options | None:
    if isinstance(store, S3Store):
        return _options(request.getfixturevalue("s3_endpoint"))
    return None


def test_is_uri() -> None:
    assert is_uri("s3://bucket/key.jpg")
    assert is_uri("S3://bucket/key.jpg")
    assert is_uri("file:///x/y.jpg")
    for ref in ("key.jpg", "a/b.jpg", "/abs/path.jpg", "C:\\data\\x.jpg", "http://h/x.jpg", ""):
        assert not is_uri(ref)


def test_make_bucket_command_creates_a_missing_bucket_once(
    s3_endpoint: str, s3_client: S3Client, s3_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`simsearch store make-bucket` (the chart's MinIO set-up job) is idempotent."""
    from simsearch.cli import main

    name = f"made-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("SIMSEARCH_S3_ENDPOINT_URL", s3_endpoint)
    assert main(["store", "make-bucket", f"s3://{name}"]) == 0
    s3_client.head_bucket(Bucket=name)  # raises if it was not created
    store = S3Store(name, "", _options(s3_endpoint))
    assert store.ensure_root() is False  # already there: nothing to do
    store.put("a.txt", b"x")
    assert store.get("a.txt") == b"x"


def test_file_store_make_bucket_creates_the_folder(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "new" / "root")
    assert store.ensure_root() is True
    assert store.ensure_root() is False


# -------------------------------------------------------------------- public surface

STORAGE = "simsearch.common.storage"
MODULES = ("atomic", "base", "file", "s3", "uri")


def _defined_public_names(module: types.ModuleType) -> set[str]:
    """Public names a module defines itself (classes, functions, constants), not imports."""
    tree = ast.parse(Path(str(module.__file__)).read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {name for name in names if not name.startswith("_")}


def _imported_storage_names() -> set[tuple[str, str]]:
    """(file, name) for every name imported from the storage package or its modules."""
    found: set[tuple[str, str]] = set()
    for top in ("services", "tests", "scripts"):
        for path in (ROOT / top).rglob("*.py"):
            if STORAGE.replace(".", "/") in path.as_posix():
                continue  # the package's own modules import each other by design
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(STORAGE):
                    found.update((path.name, alias.name) for alias in node.names)
    return found


def test_storage_all_is_complete() -> None:
    """Like httpx: `__all__` is exactly what the package offers, so nothing is reachable
    only through a module path, and `from simsearch.common.storage import X` always works.
    """
    modules = [importlib.import_module(f"{STORAGE}.{name}") for name in MODULES]
    union: set[str] = set()
    for module in modules:
        assert set(module.__all__) == _defined_public_names(module), module.__name__
        union.update(module.__all__)
        for name in module.__all__:
            assert getattr(storage_package, name) is getattr(module, name), name
    assert set(storage_package.__all__) == union
    assert len(storage_package.__all__) == len(union)  # no name listed twice
    offered = {n for n in vars(storage_package) if not n.startswith("_") and n not in MODULES}
    assert offered == union, "every public name of the package is in __all__"


def test_everything_imported_from_storage_is_public() -> None:
    """No module reaches into the package for a private name or one missing from __all__."""
    wrong = sorted(
        (file, name)
        for file, name in _imported_storage_names()
        if name not in storage_package.__all__
    )
    assert wrong == []
