"""A shard process over a store with two collections, over real HTTP.

Covered: `/search` of each collection answers with that collection's ids only; an
unknown collection is a 404 (`collection_not_found`); `/items/{id}?collection=` reads
the collection named (the default without it); `/info` lists both collections' versions,
each tagged; a rollback of one collection (`simsearch index rollback --index NAME`, then
`POST /admin/reload`) moves only that collection's live version. Every wait is on a
condition with a deadline, never a fixed sleep.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from simsearch.common.layout import IndexLayout
from simsearch.common.manifest import Manifest, ModelInfo
from simsearch.common.storage import FileStore
from simsearch.common.wire import decode_array, encode_array
from simsearch.indexer.writer import write_index
from tests.support.procs import Service, run_cli, start_service

pytestmark = pytest.mark.integration

DIM = 16
K = 5
N = 300
# the two collections' ids are disjoint (even / odd), and so are their partition counts
COLLECTIONS = {"default": (4, 0), "photos": (3, 1)}  # name -> (P, id offset)


def ids_of(name: str) -> np.ndarray:
    return np.arange(N, dtype=np.int64) * 2 + COLLECTIONS[name][1]


def unit(rows: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((rows, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def publish(store: FileStore, name: str, seed: int) -> Manifest:
    partitions = COLLECTIONS[name][0]
    paths = [f"{name}/{i}.jpg" for i in range(N)]
    model = ModelInfo(name="test", dim=DIM)
    layout = IndexLayout(store, name)
    return write_index(layout, ids_of(name), unit(N, seed), paths, model, partitions=partitions)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[Manifest]]]:
    """Two collections; photos has two versions (the second live), default one."""
    root = tmp_path_factory.mktemp("collections") / "store"
    store = FileStore(root)
    published = {"default": [publish(store, "default", 0)]}
    published["photos"] = [publish(store, "photos", 1), publish(store, "photos", 2)]
    return root, published


@pytest.fixture(scope="module")
def shard(
    store: tuple[Path, dict[str, list[Manifest]]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    env = {
        "SIMSEARCH_STORE": str(store[0]),
        "SIMSEARCH_SHARD_ORDINAL": "0",
        "SIMSEARCH_REPLICAS": "1",
        "SIMSEARCH_CACHE_DIR": str(tmp_path_factory.mktemp("cache")),
        "SIMSEARCH_POLL_S": "3600",  # only a reload makes it look again
        "SIMSEARCH_DRAIN_S": "3600",  # the version rolled back from stays held
        "SIMSEARCH_LOG_FORMAT": "text",
    }
    with start_service("shard", env) as service:
        yield service


def info(service: Service) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{service.url}/info", timeout=10).json()
    return body


def search(service: Service, collection: str, version: str) -> httpx.Response:
    queries = unit(3, 9)
    body = {
        "collection": collection,
        "version": version,
        "partitions": list(range(COLLECTIONS[collection][0])),
        "k": K,
        "dim": DIM,
        "nq": len(queries),
        "vectors_b64": encode_array(queries, "<f4"),
    }
    return httpx.post(f"{service.url}/search", json=body, timeout=30)


def live_versions(service: Service) -> dict[str, str]:
    return {v["collection"]: v["version"] for v in info(service)["versions"] if v["live"]}


def test_search_answers_each_collection_with_its_own_ids(
    shard: Service, store: tuple[Path, dict[str, list[Manifest]]]
) -> None:
    for name, manifests in store[1].items():
        answer = search(shard, name, manifests[-1].version)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        ids = decode_array(body["ids_b64"], "<i8", (body["nq"], body["width"]))
        found = set(ids[ids >= 0].tolist())
        assert found and found <= set(ids_of(name).tolist()), name
        assert all(p.startswith(f"{name}/") for row in body["paths"] for p in row if p)


def test_an_unknown_collection_is_a_404(
    shard: Service, store: tuple[Path, dict[str, list[Manifest]]]
) -> None:
    answer = search(shard, "default", store[1]["default"][0].version)
    assert answer.status_code == 200
    body = answer.request.content.replace(b'"default"', b'"nope"')
    refused = httpx.post(f"{shard.url}/search", content=body, timeout=10)
    assert refused.status_code == 404
    assert refused.json()["error"] == "collection_not_found"
    assert "'nope'" in refused.json()["detail"]
    item = httpx.get(f"{shard.url}/items/0", params={"collection": "nope"}, timeout=10)
    assert (item.status_code, item.json()["error"]) == (404, "collection_not_found")


def test_items_read_the_collection_named(shard: Service) -> None:
    odd = int(ids_of("photos")[7])
    item = httpx.get(f"{shard.url}/items/{odd}", params={"collection": "photos"}, timeout=10)
    assert item.status_code == 200, item.text
    assert item.json()["path"] == "photos/7.jpg"
    even = int(ids_of("default")[7])
    default = httpx.get(f"{shard.url}/items/{even}", timeout=10)  # SIMSEARCH_INDEX's
    assert default.status_code == 200 and default.json()["path"] == "default/7.jpg"
    # an id of the other collection is not in this one's partition
    assert httpx.get(f"{shard.url}/items/{odd}", timeout=10).status_code == 404


def test_info_lists_every_collection_and_a_rollback_moves_only_its_own(
    shard: Service, store: tuple[Path, dict[str, list[Manifest]]]
) -> None:
    root, published = store
    body = info(shard)
    assert body["collections"] == ["default", "photos"] and body["index"] == "default"
    assert body["ready"] and body["error"] is None
    before = live_versions(shard)
    assert before == {
        "default": published["default"][0].version,
        "photos": published["photos"][1].version,
    }

    # the version named: two versions built in one second need not sort by build order
    older = published["photos"][0].version
    rolled = run_cli(
        "index", "rollback", older, "--store", str(root), "--index", "photos", cwd=root
    )
    assert rolled.returncode == 0, rolled.stderr
    reload = httpx.post(f"{shard.url}/admin/reload", timeout=60)
    assert reload.status_code == 200, reload.text
    assert reload.json()["current"] == published["default"][0].version  # SIMSEARCH_INDEX's
    after = live_versions(shard)
    assert after == {"default": before["default"], "photos": published["photos"][0].version}
    held = {(v["collection"], v["version"]) for v in info(shard)["versions"]}
    assert ("photos", published["photos"][1].version) in held  # drains later, not at once
    answer = search(shard, "photos", published["photos"][0].version)
    assert answer.status_code == 200
