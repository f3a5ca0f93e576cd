"""`local/cluster.py`: the collections `up` reads from its flags, and the state file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simsearch.common.errors import ConfigError
from simsearch.local.cluster import ClusterState, collections_of, uri_of


def test_one_unnamed_folder_is_the_default_collection_as_before(tmp_path: Path) -> None:
    assert collections_of([str(tmp_path)], "default") == {"default": str(tmp_path)}
    assert collections_of(["s3://b/photos"], "main") == {"main": "s3://b/photos"}


def test_unnamed_folders_after_the_first_are_named_after_their_folder(tmp_path: Path) -> None:
    found = collections_of(
        [str(tmp_path / "a"), str(tmp_path / "My Photos.2024"), "s3://b/Products/"], "default"
    )
    assert found == {
        "default": str(tmp_path / "a"),
        "my-photos-2024": str(tmp_path / "My Photos.2024"),
        "products": "s3://b/Products/",
    }
    assert list(found) == ["default", "my-photos-2024", "products"]  # the build order


def test_named_collections_keep_their_names_and_order(tmp_path: Path) -> None:
    found = collections_of(
        [f"shoes={tmp_path / 's'}", str(tmp_path / "d"), "hats=s3://b/h=1"], "default"
    )
    assert found == {
        "shoes": str(tmp_path / "s"),
        "default": str(tmp_path / "d"),
        "hats": "s3://b/h=1",
    }


def test_a_path_with_an_equals_sign_stays_a_path(tmp_path: Path) -> None:
    folder = tmp_path / "a=b"
    assert collections_of([str(folder)], "default") == {"default": str(folder)}
    assert collections_of(["s3://b/x=y"], "default") == {"default": "s3://b/x=y"}


def test_relative_paths_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert collections_of(["pics", "extra=more"], "default") == {
        "default": str(tmp_path / "pics"),
        "extra": str(tmp_path / "more"),
    }
    assert uri_of("file:///x") == "file:///x"


def test_a_name_given_twice_is_an_error_naming_both_paths(tmp_path: Path) -> None:
    first, second = tmp_path / "one" / "pics", tmp_path / "two" / "pics"
    with pytest.raises(ConfigError) as caught:
        collections_of([str(tmp_path / "d"), str(first), str(second)], "default")
    assert "'pics'" in str(caught.value)
    assert str(first) in str(caught.value) and str(second) in str(caught.value)
    with pytest.raises(ConfigError, match="'default'"):
        collections_of([str(first), f"default={second}"], "default")


@pytest.mark.parametrize("spec", ["Big=/x", "-x=/x", "a.b=/x", f"{'n' * 64}=/x"])
def test_an_invalid_name_is_refused(spec: str) -> None:
    with pytest.raises(ConfigError, match="no collection name"):
        collections_of([spec], "default")


def test_a_folder_that_makes_no_name_must_be_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="NAME="):
        collections_of([str(tmp_path / "d"), str(tmp_path / "_hidden")], "default")


def _state(tmp_path: Path, collections: dict[str, str], images: str = "/i") -> ClusterState:
    return ClusterState(
        str(tmp_path), "file:///s", "default", images, 8000, collections=collections
    )


def test_the_state_file_records_the_collections(tmp_path: Path) -> None:
    state = _state(tmp_path, {"default": "/i", "more": "/m", "same": "/i"})
    state.save()
    loaded = ClusterState.load(tmp_path)
    assert loaded.all_collections() == {"default": "/i", "more": "/m", "same": "/i"}
    assert loaded.image_roots() == ["/i", "/m"]
    assert loaded.router_images() == ""  # several: each manifest's source


def test_a_state_file_from_before_collections_is_its_one_index(tmp_path: Path) -> None:
    old = {
        "folder": str(tmp_path),
        "store": "file:///s",
        "index": "default",
        "images": "/i",
        "port": 8000,
        "replication": 1,
        "processes": [],
        "supervisor_pid": None,
    }
    (tmp_path / "state.json").write_text(json.dumps(old))
    state = ClusterState.load(tmp_path)
    assert state.all_collections() == {"default": "/i"}
    assert state.image_roots() == ["/i"] and state.router_images() == "/i"
    imported = _state(tmp_path, {"default": ""}, images="")
    assert imported.image_roots() == [] and imported.router_images() == ""
