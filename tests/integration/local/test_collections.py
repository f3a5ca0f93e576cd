"""`simsearch up --images A --images NAME=B`: a local cluster serving two collections.

Each `--images` is indexed into its own `index/<name>/`; the shards find both in the store
by themselves, the router lists and searches each (`/collections/{name}/…`), and the
per-collection CLI (`index build --index NAME`, `index rollback --index NAME`) changes only
the collection it names. Real processes over real HTTP on 127.0.0.1, a file store.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from simsearch.common.layout import IndexLayout
from simsearch.common.storage import open_store
from simsearch.local.cluster import ClusterState
from simsearch.local.roles import indexer_args
from tests.integration.router.test_page_browser import SHAPES, draw_shapes
from tests.support.paths import SAMPLE_IMAGES
from tests.support.procs import run_cli as cli
from tests.support.procs import wait_for
from tests.support.s3server import free_port_block

pytestmark = pytest.mark.integration


def collections(url: str) -> dict[str, dict[str, Any]]:
    listed = httpx.get(f"{url}/collections", timeout=10).json()
    return {c["name"]: c for c in listed["collections"]}


def paths_found(url: str, route: str, photo: Path, k: int = 30) -> set[str]:
    with photo.open("rb") as handle:
        answer = httpx.post(f"{url}{route}", params={"k": k}, files={"file": handle}, timeout=60)
    assert answer.status_code == 200, answer.text
    return {hit["path"] for hit in answer.json()["results"]}


def test_up_with_two_collections_search_each_rebuild_and_roll_back_one(tmp_path: Path) -> None:
    flowers = tmp_path / "flowers"
    for photo in sorted(SAMPLE_IMAGES.glob("*/*.jpg"))[::25]:
        (flowers / photo.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, flowers / photo.parent.name / photo.name)
    flower_paths = {f"{p.parent.name}/{p.name}" for p in flowers.glob("*/*.jpg")}
    shapes = tmp_path / "drawn"
    draw_shapes(shapes)
    port = free_port_block()
    url = f"http://127.0.0.1:{port}"
    up = cli(
        "up",
        *("--images", str(flowers), "--images", f"shapes={shapes}"),
        *("--shards", "2", "--partitions", "4", "--port", str(port)),
        cwd=tmp_path,
    )
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        assert "collections: default, shapes (default: default)" in up.stdout
        status = cli("status", cwd=tmp_path).stdout
        assert f"collection default (default): {flowers}" in status
        assert f"collection shapes: {shapes}" in status

        listed = collections(url)
        assert {name: c["vectors"] for name, c in listed.items()} == {
            "default": len(flower_paths),
            "shapes": len(SHAPES),
        }
        assert all(c["coverage"] == 1.0 and not c["partial"] for c in listed.values())
        # Each collection answers with its own images only; the old route is the default.
        rose = next(p for p in sorted(flowers.glob("roses/*.jpg")))
        assert paths_found(url, "/collections/shapes/search/image", rose) == set(SHAPES)
        assert paths_found(url, "/search/image", shapes / SHAPES[0]) == flower_paths
        assert paths_found(url, "/collections/default/search/image", rose) == flower_paths
        # The router serves each collection's images from where its manifest says.
        with (shapes / SHAPES[0]).open("rb") as handle:
            hits = httpx.post(
                f"{url}/collections/shapes/search/image", files={"file": handle}, timeout=60
            ).json()["results"]
        image = httpx.get(url + hits[0]["url"], timeout=10)
        assert image.status_code == 200 and image.content == (shapes / hits[0]["path"]).read_bytes()

        # Scaling down waits for every collection to be covered by the remaining shard.
        assert cli("scale", "1", cwd=tmp_path).returncode == 0
        wait_for(lambda: all(c["coverage"] == 1.0 for c in collections(url).values()), 90)

        _rebuild_and_roll_back_shapes(tmp_path, url, shapes)
    finally:
        down = cli("down", cwd=tmp_path)
    assert down.returncode == 0, down.stderr


def _rebuild_and_roll_back_shapes(tmp_path: Path, url: str, shapes: Path) -> None:
    """`index build --index shapes` publishes a version of shapes only; `index rollback
    --index shapes` takes it back, and the default collection never moves."""
    state = ClusterState.load(tmp_path / ".simsearch")
    store = open_store(state.store)
    default_live = IndexLayout(store, "default").current()
    before = collections(url)["shapes"]["version"]
    tulip = sorted((SAMPLE_IMAGES / "tulips").glob("*.jpg"))[0]
    shutil.copy(tulip, shapes / "tulip.jpg")
    embedder = next(p for p in state.processes if p.role == "embedder")
    build = indexer_args(
        str(shapes),
        state.store,
        "shapes",
        embedder.url,
        4,
        tmp_path / ".simsearch" / "build" / "shapes",
    )
    built = cli(*build, "--no-progress", cwd=tmp_path)
    assert built.returncode == 0, built.stderr[-3000:]
    wait_for(lambda: collections(url)["shapes"]["vectors"] == len(SHAPES) + 1, 90)
    assert collections(url)["shapes"]["version"] != before
    assert IndexLayout(store, "default").current() == default_live

    rolled = cli("index", "rollback", "--store", state.store, "--index", "shapes", cwd=tmp_path)
    assert rolled.returncode == 0, rolled.stderr[-3000:]
    assert IndexLayout(store, "shapes").current() == before
    assert IndexLayout(store, "default").current() == default_live
    wait_for(lambda: collections(url)["shapes"]["version"] == before, 90)
    assert collections(url)["shapes"]["vectors"] == len(SHAPES)
    assert collections(url)["default"]["version"] == default_live
