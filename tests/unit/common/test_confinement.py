"""The allowed-roots fence: pure URI checks, realpath resolution, and regular-file reads."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from simsearch.common.confinement import AllowedRoots, Root, has_dot_dot, parse_root, parse_roots
from simsearch.common.errors import ConfigError, Forbidden, InvalidParameter, ObjectNotFound
from simsearch.common.settings import load_settings
from simsearch.common.storage import FileStore
from simsearch.embedder.settings import EmbedderSettings

SETTING = "SIMSEARCH_ALLOWED_ROOTS"


def fence(*uris: str) -> AllowedRoots:
    return AllowedRoots([parse_root(u) for u in uris], SETTING)


# ------------------------------------------------------------------ parsing roots


def test_roots_parse_into_canonical_forms() -> None:
    assert parse_root("s3://photos/lib/") == Root("s3://photos/lib", "s3", "photos", "lib")
    assert parse_root("s3://photos") == Root("s3://photos", "s3", "photos", "")
    assert parse_root("file:///data//images/") == Root(
        "file:///data/images", "file", path="/data/images"
    )
    assert parse_root("/data/images").uri == "file:///data/images"
    assert [r.uri for r in parse_roots(" s3://a/x , /d,")] == ["s3://a/x", "file:///d"]


@pytest.mark.parametrize(
    "uri",
    ["ftp://host/x", "relative/dir", "s3://Bad!", "file://host/x", "s3://b/../x", "/d/%2e%2e", ""],
)
def test_bad_roots_are_config_errors(uri: str) -> None:
    with pytest.raises(ConfigError):
        parse_root(uri)


def test_contains_compares_buckets_exactly_and_prefixes_on_slashes() -> None:
    lib = parse_root("s3://photos/lib")
    assert lib.contains(parse_root("s3://photos/lib"))
    assert lib.contains(parse_root("s3://photos/lib/2024"))
    assert not lib.contains(parse_root("s3://photos/library"))
    assert not lib.contains(parse_root("s3://Photos/lib"))
    assert not lib.contains(parse_root("/lib"))
    assert parse_root("s3://photos").contains(lib)


# --------------------------------------------------------------- '..' detection


@pytest.mark.parametrize(
    "ref",
    [
        "../x.jpg",
        "file:///root/../etc/passwd",
        "file:///root/%2e%2e/etc/passwd",
        "file:///root/%2E%2e/etc/passwd",
        "file:///root/..%2fetc/passwd",
        "file:///root/%252e%252e/etc",
        "s3://b/lib/..\\x",
        "s3://b/lib/%2e%2e/x",
    ],
)
def test_dot_dot_is_found_raw_and_percent_encoded(ref: str) -> None:
    assert has_dot_dot(ref)
    f = fence("file:///root", "s3://b/lib")
    with pytest.raises(Forbidden, match=r"'\.\.' segment"):
        if "://" in ref:
            f.locate(ref)
        else:
            f.locate_key(parse_root("s3://b/lib"), ref)


@pytest.mark.parametrize("ref", ["file:///root/a..b.jpg", "s3://b/lib/x..jpg", "file:///r/.x/"])
def test_dots_inside_names_are_fine(ref: str) -> None:
    assert not has_dot_dot(ref)


def test_nul_bytes_are_malformed() -> None:
    with pytest.raises(InvalidParameter, match="NUL"):
        fence("file:///root").locate("file:///root/a%00.jpg")


# ------------------------------------------------------------------------- s3


def test_s3_references_match_bucket_and_prefix() -> None:
    f = fence("s3://photos/lib", "s3://other")
    target = f.locate("s3://photos/lib/a/b.jpg")
    assert (target.store_uri, target.key, target.local_root) == ("s3://photos/lib", "a/b.jpg", None)
    assert f.locate("s3://other/x.jpg").key == "x.jpg"
    for outside in (
        "s3://photos/library/a.jpg",  # prefix, but not on a "/" boundary
        "s3://photos/a.jpg",
        "s3://Photos/lib/a.jpg",  # bucket names compare exactly
        "s3://photos-2/lib/a.jpg",
        "s3://elsewhere/lib/a.jpg",
    ):
        with pytest.raises(Forbidden, match=SETTING):
            f.locate(outside)


def test_malformed_s3_references_are_400_not_403() -> None:
    f = fence("s3://photos/lib")
    for bad in ("s3://photos", "s3://photos/lib//a.jpg", "s3://!/a"):
        with pytest.raises(InvalidParameter):
            f.locate(bad)


def test_bare_keys_go_through_the_same_fence() -> None:
    store = parse_root("s3://photos/lib")
    assert fence("s3://photos").locate_key(store, "a.jpg").key == "lib/a.jpg"
    with pytest.raises(Forbidden):
        fence("s3://photos/elsewhere").locate_key(store, "a.jpg")
    with pytest.raises(InvalidParameter):
        fence("s3://photos").locate_key(store, "/abs.jpg")


def test_no_roots_refuse_everything() -> None:
    with pytest.raises(Forbidden, match=SETTING):
        AllowedRoots([], SETTING).locate("s3://photos/a.jpg")
    with pytest.raises(InvalidParameter, match="unsupported"):
        AllowedRoots([], SETTING).locate("http://169.254.169.254/latest")


# ----------------------------------------------------------------------- files


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/ with a photo, a subfolder, a symlink out and a symlink in; secret.jpg outside."""
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "a.jpg").write_bytes(b"inside")
    (root / "sub" / "b.jpg").write_bytes(b"deeper")
    (tmp_path / "secret.jpg").write_bytes(b"outside")
    (root / "out.jpg").symlink_to(tmp_path / "secret.jpg")
    (root / "outdir").symlink_to(tmp_path)
    (root / "alias.jpg").symlink_to(root / "a.jpg")
    return tmp_path


def test_file_references_resolve_inside_the_root(tree: Path) -> None:
    f = fence((tree / "root").as_uri())
    target = f.locate((tree / "root" / "sub" / "b.jpg").as_uri())
    assert target.key == "sub/b.jpg"
    assert target.local_root == os.path.realpath(tree / "root")
    assert f.locate((tree / "root" / "alias.jpg").as_uri()).key == "a.jpg"  # link kept inside


def test_symlinks_cannot_escape(tree: Path) -> None:
    f = fence((tree / "root").as_uri())
    for ref in (tree / "root" / "out.jpg", tree / "root" / "outdir" / "secret.jpg"):
        with pytest.raises(Forbidden):
            f.locate(ref.as_uri())


def test_outside_answers_the_same_whether_or_not_the_file_exists(tree: Path) -> None:
    f = fence((tree / "root").as_uri())
    answers = []
    for ref in ("file:///etc/passwd", "file:///etc/no-such-file", (tree / "secret.jpg").as_uri()):
        with pytest.raises(Forbidden) as caught:
            f.locate(ref)
        answers.append(caught.value.reason.replace(ref, "REF"))
    assert len(set(answers)) == 1


def test_a_sibling_folder_sharing_the_name_prefix_is_outside(tree: Path) -> None:
    (tree / "root2").mkdir()
    with pytest.raises(Forbidden):
        fence((tree / "root").as_uri()).locate((tree / "root2" / "x.jpg").as_uri())


def test_the_root_itself_is_a_directory_not_an_object(tree: Path) -> None:
    with pytest.raises(InvalidParameter, match="directory"):
        fence((tree / "root").as_uri()).locate((tree / "root").as_uri() + "/")


def test_a_root_that_is_a_symlink_is_resolved_at_each_check(tree: Path) -> None:
    link = tree / "link-root"
    link.symlink_to(tree / "root")
    f = fence(link.as_uri())
    assert f.locate((tree / "root" / "a.jpg").as_uri()).key == "a.jpg"
    assert f.locate((link / "a.jpg").as_uri()).key == "a.jpg"


# --------------------------------------------------- reading inside the roots


def test_file_store_reads_only_regular_files_and_never_blocks(tree: Path) -> None:
    root = tree / "root"
    os.mkfifo(root / "pipe.jpg")
    store = FileStore(root)
    started = time.monotonic()
    with pytest.raises(ObjectNotFound, match="not a regular file"):
        store.get_limited("pipe.jpg", 1024)
    with pytest.raises(ObjectNotFound, match="not a regular file"):
        store.get("pipe.jpg")
    assert time.monotonic() - started < 2
    with pytest.raises(ObjectNotFound):
        store.get_limited("sub", 1024)
    assert store.get_limited("a.jpg", 1024) == b"inside"


def test_file_store_without_symlinks_refuses_a_link_as_last_component(tree: Path) -> None:
    store = FileStore(tree / "root", follow_symlinks=False)
    with pytest.raises(ObjectNotFound, match="symbolic link"):
        store.get_limited("alias.jpg", 1024)
    assert FileStore(tree / "root").get_limited("alias.jpg", 1024) == b"inside"


# --------------------------------------------------------------- the setting


def test_the_default_is_the_store_and_an_explicit_list_replaces_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [n for n in os.environ if n.startswith("SIMSEARCH_")]:
        monkeypatch.delenv(name)
    assert load_settings(EmbedderSettings).roots() == ()
    assert [r.uri for r in load_settings(EmbedderSettings, store="s3://b/lib").roots()] == [
        "s3://b/lib"
    ]
    both = load_settings(EmbedderSettings, store="s3://b/lib", allowed_roots="s3://b,/imgs")
    assert [r.uri for r in both.roots()] == ["s3://b", "file:///imgs"]


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"allowed_roots": "ftp://x"}, f"{SETTING}: "),
        ({"allowed_roots": "images"}, f"{SETTING}: "),
        ({"store": "s3://b/lib", "allowed_roots": "s3://b/other"}, "SIMSEARCH_STORE (s3://b/lib)"),
        ({"store": "s3://!"}, "SIMSEARCH_STORE: "),
    ],
)
def test_bad_settings_fail_at_start_naming_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(EmbedderSettings, **env)
    assert named in caught.value.reason
