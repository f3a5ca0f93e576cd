"""`local/commands.py`: which collections `simsearch up` builds and which is the default."""

from __future__ import annotations

from pathlib import Path

import pytest

from simsearch.cli import build_parser
from simsearch.common.errors import ConfigError
from simsearch.local.cluster import ClusterState
from simsearch.local.commands import SAMPLES, _new_state


def state_of(tmp_path: Path, *argv: str) -> ClusterState:
    args = build_parser().parse_args(["up", "--folder", str(tmp_path), *argv])
    return _new_state(args, tmp_path)


def test_no_images_flag_indexes_the_samples_as_the_default_collection(tmp_path: Path) -> None:
    state = state_of(tmp_path)
    assert state.all_collections() == {"default": str(SAMPLES)}
    assert (state.index, state.images) == ("default", str(SAMPLES))
    assert state.router_images() == str(SAMPLES)  # as before collections
    assert state.store == str(tmp_path / "store")


def test_repeated_images_flags_make_collections(tmp_path: Path) -> None:
    state = state_of(tmp_path, "--images", "/a", "--images", "extra=/b", "--images", "/c/More")
    assert state.all_collections() == {"default": "/a", "extra": "/b", "more": "/c/More"}
    assert (state.index, state.images) == ("default", "/a")
    assert state.image_roots() == ["/a", "/b", "/c/More"]


def test_the_default_is_the_index_name_or_else_the_first(tmp_path: Path) -> None:
    named = state_of(tmp_path, "--images", "x=/a", "--images", "y=/b", "--index", "y")
    assert (named.index, named.images) == ("y", "/b")
    first = state_of(tmp_path, "--images", "x=/a", "--images", "y=/b")
    assert (first.index, first.images) == ("x", "/a")
    renamed = state_of(tmp_path, "--images", "/a", "--index", "photos")
    assert renamed.all_collections() == {"photos": "/a"}


def test_features_make_one_collection_without_images(tmp_path: Path) -> None:
    state = state_of(tmp_path, "--features", "f.h5")
    assert state.all_collections() == {"default": ""} and state.image_roots() == []
    with pytest.raises(ConfigError, match="not both"):
        state_of(tmp_path, "--features", "f.h5", "--images", "/a")
