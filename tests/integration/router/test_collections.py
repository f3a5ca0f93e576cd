"""Two collections behind one router, over real processes: a router and two shards on one
file:// store holding the indexes `default` (48 vectors of dim 16, P=2) and `cats` (36
vectors of dim 8, P=3, with metadata: key, label, size), images in a folder per collection.

Each collection answers only from itself (ids, paths, hit URLs, images); an unknown
collection is a 404 naming the known ones; a key restricted to `cats` is refused (403)
elsewhere, the old routes included (they are the default collection); a filter that does
not fit the collection's metadata is refused by the router (400) before any shard sees it,
in every place a filter travels (the JSON body, the similar search's query parameter, the
image search's form field).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from simsearch.common.features import open_features
from simsearch.common.ids import key_ids
from simsearch.common.layout import IndexLayout
from simsearch.common.manifest import Manifest, ModelInfo, new_version_id
from simsearch.common.metadata import FieldType
from simsearch.common.metatable import build_table, write_table
from simsearch.common.storage import open_store
from simsearch.indexer.writer import write_index
from tests.support.keyfiles import swap_secret_volume
from tests.support.paths import SAMPLE_IMAGES
from tests.support.procs import Service, start_service, wait_for

pytestmark = pytest.mark.integration

SCHEMA: dict[str, FieldType] = {"key": "string", "label": "string", "size": "int"}
ALL, CATS_ONLY = "key-all", "key-cats-only"


@dataclass
class Index:
    """What one collection holds: unit rows, their ids and paths, the images written."""

    name: str
    version: str
    ids: np.ndarray
    vectors: np.ndarray
    paths: list[str]
    images: dict[str, bytes]

    def brute(self, q: np.ndarray, k: int) -> list[int]:
        scores = self.vectors @ (q / np.linalg.norm(q))
        return [int(i) for i in self.ids[np.argsort(-scores)[:k]]]


@dataclass
class Cluster:
    router: Service
    default: Index
    cats: Index


def label_of(key: str) -> str:
    return "tabby" if int(key[-8:-4]) % 3 == 0 else "calico"


def with_metadata(layout: IndexLayout, manifest: Manifest, folder: Path) -> Manifest:
    """Publish `manifest` again as a new version whose partitions carry a metadata.arrow
    (rows in features.h5 order), and the schema in the manifest."""
    version = new_version_id()
    partitions = []
    for info in manifest.partition_files:
        features = folder / f"{info.partition}.h5"
        layout.store.download_file(layout.resolve(info.features), features)
        opened = open_features(features)
        keys = opened.paths(np.arange(len(opened.ids)))
        rows = [{"key": k, "label": label_of(k), "size": 1000 + int(k[-8:-4])} for k in keys]
        table = folder / f"{info.partition}.arrow"
        write_table(build_table(opened.ids, rows, SCHEMA), table)
        relative = layout.partition_relative(info.partition, "metadata.arrow")
        partitions.append(
            info.model_copy(update={"metadata": layout.upload(version, relative, table)})
        )
    data = {**manifest.model_dump(), "version": version, "metadata": SCHEMA}
    data["partition_files"] = [p.model_dump() for p in partitions]
    republished = Manifest.model_validate(data)
    layout.publish(republished)
    return republished


def build(root: Path, name: str, n: int, dim: int, p: int, seed: int) -> Index:
    """Index `name` in the store under `root`, its first two keys real photos on disk."""
    images = root / f"images-{name}"
    paths = [f"{name}/{i:04d}.jpg" for i in range(n)]
    stored = {}
    photos = sorted(SAMPLE_IMAGES.glob("*/*.jpg"))[seed : seed + 2]
    for key, photo in zip(paths[:2], photos, strict=True):
        (images / key).parent.mkdir(parents=True, exist_ok=True)
        stored[key] = photo.read_bytes()
        (images / key).write_bytes(stored[key])
    ids = key_ids(paths)
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    layout = IndexLayout(open_store((root / "store").as_uri()), name)
    manifest = write_index(
        layout, ids, x, paths, ModelInfo(name="test-model", dim=dim), partitions=p,
        source=images.as_uri(), probe_recall=False,
    )  # fmt: skip
    if name == "cats":
        scratch = root / "scratch"
        scratch.mkdir()
        manifest = with_metadata(layout, manifest, scratch)
    return Index(name, manifest.version, ids, x, paths, stored)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("collections")
    default = build(root, "default", 48, 16, 2, seed=1)
    cats = build(root, "cats", 36, 8, 3, seed=5)
    store = (root / "store").as_uri()
    keys = swap_secret_volume(
        root / "keys", f"search:{ALL}\nsearch:{CATS_ONLY} collections=cats\n", 1
    )

    def shard(ordinal: int) -> dict[str, str]:
        return {
            "SIMSEARCH_STORE": store,
            "SIMSEARCH_SHARD_ORDINAL": str(ordinal),
            "SIMSEARCH_REPLICAS": "2",
            "SIMSEARCH_POLL_S": "1",
            "SIMSEARCH_CACHE_DIR": str(root / f"cache-{ordinal}"),
        }

    with start_service("shard", shard(0)) as a, start_service("shard", shard(1)) as b:
        env = {
            "SIMSEARCH_SHARDS": f"{a.url},{b.url}",
            "SIMSEARCH_STORE": store,
            "SIMSEARCH_POLL_S": "0.2",
            "SIMSEARCH_API_KEYS_FILE": str(keys),
        }
        with start_service("router", env, timeout_s=60) as router:
            running = Cluster(router, default, cats)

            def both_served() -> bool:
                listed = get(running, "/collections").json()["collections"]
                served = {c["name"]: c["version"] for c in listed if not c["partial"]}
                return served == {"default": default.version, "cats": cats.version}

            wait_for(both_served, 60, "both collections served in full", (httpx.HTTPError,))
            yield running


def get(c: Cluster, path: str, key: str = ALL, **params: Any) -> httpx.Response:
    return httpx.get(f"{c.router.url}{path}", params=params, headers={"x-api-key": key}, timeout=10)


def post(c: Cluster, path: str, body: Any, key: str = ALL, **params: Any) -> httpx.Response:
    headers = {"x-api-key": key}
    return httpx.post(
        f"{c.router.url}{path}", json=body, params=params, headers=headers, timeout=10
    )


def test_the_list_and_the_detail_describe_each_collection(cluster: Cluster) -> None:
    listed = get(cluster, "/collections").json()
    assert listed["default"] == "default"
    by_name = {c["name"]: c for c in listed["collections"]}
    assert set(by_name) == {"default", "cats"}
    cats = by_name["cats"]
    assert (cats["partitions"], cats["dim"], cats["vectors"]) == (3, 8, 36)
    assert cats["coverage"] == 1.0 and cats["metadata"] == SCHEMA
    assert (by_name["default"]["dim"], by_name["default"]["metadata"]) == (16, None)
    detail = get(cluster, "/collections/cats").json()
    assert detail["version"] == cluster.cats.version
    live = [v["version"] for v in detail["versions"] if v["live"]]
    assert live == [cluster.cats.version]  # the version without metadata is no longer live


def test_each_collection_answers_only_from_itself(cluster: Cluster) -> None:
    for index, prefix in ((cluster.cats, "/collections/cats"), (cluster.default, "")):
        q = np.random.default_rng(9).standard_normal((index.vectors.shape[1],), np.float32)
        response = post(cluster, f"{prefix}/search/vector", {"vector": q.tolist(), "k": 8})
        assert response.status_code == 200, response.text
        body = response.json()
        assert [h["id"] for h in body["results"]] == index.brute(q, 8)
        assert body["index_version"] == index.version and body["coverage"] == 1.0
        assert all(h["path"].startswith(f"{index.name}/") for h in body["results"])
        assert all(h["url"] == f"{prefix}/images/{h['id']}" for h in body["results"])
    # the default collection's routes still take the fast path (no query string) and the
    # declared one (a query string), and neither sees the other collection's dimension
    wrong_dim = post(cluster, "/search/vector", {"vector": [1.0] * 8})
    assert wrong_dim.status_code == 400 and "dim 16" in wrong_dim.json()["detail"]
    batch = post(cluster, "/collections/cats/search/vector", {"vectors": [[1.0] * 8] * 2, "k": 3})
    assert [len(row) for row in batch.json()["results"]] == [3, 3]


def test_similar_and_images_look_ids_up_in_their_own_collection(cluster: Cluster) -> None:
    cat = int(cluster.cats.ids[0])
    similar = get(cluster, f"/collections/cats/search/similar/{cat}", k=3)
    assert similar.status_code == 200, similar.text
    assert similar.json()["results"][0]["id"] == cat
    assert get(cluster, f"/search/similar/{cat}").status_code == 404  # not a default image
    image = get(cluster, f"/collections/cats/images/{cat}")
    assert image.status_code == 200 and image.content == cluster.cats.images["cats/0000.jpg"]
    assert image.headers["content-type"] == "image/jpeg"
    assert get(cluster, f"/images/{cat}").status_code == 404
    mine = int(cluster.default.ids[1])
    assert get(cluster, f"/images/{mine}").content == cluster.default.images["default/0001.jpg"]


@pytest.mark.parametrize(
    "path",
    ["/collections/dogs", "/collections/dogs/search/similar/1", "/collections/dogs/images/1"],
)
def test_an_unknown_collection_is_a_404_naming_the_known_ones(cluster: Cluster, path: str) -> None:
    response = get(cluster, path)
    assert response.status_code == 404, response.text
    assert response.json()["error"] == "collection_not_found"
    assert response.json()["detail"] == "no shard serves a collection 'dogs'; known: cats, default"


def test_a_key_restricted_to_a_collection_is_refused_elsewhere(cluster: Cluster) -> None:
    vector = {"vector": [1.0] * 8}
    assert post(cluster, "/collections/cats/search/vector", vector, CATS_ONLY).status_code == 200
    cat = int(cluster.cats.ids[0])
    assert get(cluster, f"/collections/cats/images/{cat}", CATS_ONLY).status_code == 200
    for refused in (
        post(cluster, "/search/vector", {"vector": [1.0] * 16}, CATS_ONLY),  # the default one
        get(cluster, f"/images/{int(cluster.default.ids[0])}", CATS_ONLY),
        get(cluster, "/collections/dogs/search/similar/1", CATS_ONLY),  # 403 before 404
    ):
        assert refused.status_code == 403, refused.text
        assert (
            refused.json()["error"] == "forbidden" and "may use: cats" in refused.json()["detail"]
        )
    assert post(cluster, "/search/vector", {"vector": [1.0] * 16}).status_code == 200  # ALL


BAD_FILTERS = [
    ({"field": "colour", "eq": "red"}, "invalid_filter", "unknown filter field 'colour'"),
    ({"field": "size", "eq": "big"}, "invalid_filter", "'size' is of type int"),
    ({"field": "label", "prefix": 3}, "invalid_filter", ""),
    (
        {"field": "label", "in": [f"l{i}" for i in range(300)]},
        "filter_too_large",
        "at most 256",
    ),
    ({"or": [{"field": "size", "eq": i} for i in range(70)]}, "filter_too_large", "at most 64"),
]


@pytest.mark.parametrize(("filter_", "code", "words"), BAD_FILTERS)
def test_a_filter_that_does_not_fit_is_refused_by_the_router(
    cluster: Cluster, filter_: dict[str, Any], code: str, words: str
) -> None:
    cat = int(cluster.cats.ids[0])
    image = cluster.cats.images["cats/0000.jpg"]
    answers = [
        post(cluster, "/collections/cats/search/vector", {"vector": [1.0] * 8, "filter": filter_}),
        get(cluster, f"/collections/cats/search/similar/{cat}", filter=json.dumps(filter_)),
        httpx.post(  # no embedder: the filter is refused before one would be needed
            f"{cluster.router.url}/collections/cats/search/image",
            files={"file": ("q.jpg", image, "image/jpeg")},
            data={"filter": json.dumps(filter_)},
            headers={"x-api-key": ALL},
            timeout=10,
        ),
    ]
    for response in answers:
        if response.status_code == 422:  # the JSON body's shape (a prefix that is no string)
            assert "filter" in response.json()["detail"] and code == "invalid_filter"
            continue
        assert response.status_code == 400, response.text
        assert response.json()["error"] == code and words in response.json()["detail"]


def test_a_filter_on_a_collection_without_metadata_is_refused(cluster: Cluster) -> None:
    body = {"vector": [1.0] * 16, "filter": {"field": "key", "prefix": "default/"}}
    response = post(cluster, "/search/vector", body)
    assert response.status_code == 400 and "no metadata to filter on" in response.json()["detail"]


def test_a_filter_that_fits_is_applied_by_the_shards(cluster: Cluster) -> None:
    """Needs the shards' side of filters: only tabby cats come back, and all of them."""
    tabby = {"field": "label", "eq": "tabby"}
    body = {"vector": [1.0] * 8, "k": 36, "filter": tabby}
    response = post(cluster, "/collections/cats/search/vector", body)
    assert response.status_code == 200, response.text
    paths = sorted(h["path"] for h in response.json()["results"])
    assert paths == sorted(p for p in cluster.cats.paths if label_of(p) == "tabby")
