"""`simsearch.client` against a real cluster: every method, sync and async, behind API keys
and a rate limit, and the load generator through it.

The small cluster (tests/support/cluster.py: 2 shards, an embedder, a router, moto S3)
plus a second router in front of the same shards with search and admin keys, a per-key
vector-search limit of `2/s:4`, and the public S3 endpoint set (so `/images/{id}` is a
307 the client follows without its key). Answers are checked against the index the
cluster wrote, not against another HTTP call.

Collections and filters (issue #14): a second collection, `second`, is written into the
same store (40 of the same keys, other vectors, P=2) and the shards find it on their
next poll. It is written with the built-in metadata fields, so filters on `key` work.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from simsearch.client import (
    AsyncClient,
    BadRequest,
    Client,
    CollectionNotFound,
    FilterTooLarge,
    Forbidden,
    InvalidFilter,
    NotFound,
    RateLimited,
    RetryPolicy,
    Unauthorized,
)
from simsearch.common.ids import key_ids
from simsearch.common.layout import IndexLayout
from simsearch.common.manifest import ModelInfo
from simsearch.common.metadata import BUILTIN_FIELDS, builtin_row
from simsearch.common.storage import open_store
from simsearch.indexer.metadata import Metadata
from simsearch.indexer.writer import write_index
from simsearch.local.loadgen import QueryLoad, summarise
from tests.support.cluster import BUCKET, DIM, MODEL, N, P, SmallCluster, small_cluster, spawn
from tests.support.procs import Service, run_cli, wait_for, wait_ready
from tests.support.s3server import stop_process

pytestmark = pytest.mark.integration

SEARCH, ADMIN, BURST = "search-key", "admin-key", "burst-key"
SECOND, SECOND_N = "second", 40  # the second collection: the first 40 keys, other vectors


@pytest.fixture(scope="module")
def cluster(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmallCluster]:
    with small_cluster(s3_endpoint, tmp_path_factory.mktemp("client-index")) as running:
        yield running


@pytest.fixture(scope="module")
def keyed(cluster: SmallCluster, s3_endpoint: str) -> Iterator[Service]:
    env = {
        **cluster.router_env,
        "SIMSEARCH_API_KEYS": f"{SEARCH},{BURST}",
        "SIMSEARCH_ADMIN_KEYS": ADMIN,
        "SIMSEARCH_RATE_LIMITS": "true",
        "SIMSEARCH_RATE_VECTOR_SEARCH_PER_KEY": "2/s:4",
        "SIMSEARCH_PUBLIC_S3_ENDPOINT": s3_endpoint.replace("127.0.0.1", "localhost"),
    }
    router = spawn("router", env)
    try:
        wait_ready(router, "/health/ready", 30)
        yield router
    finally:
        stop_process(router.process)


def nearest(c: SmallCluster, row: int, k: int) -> list[int]:
    scores = c.vectors @ c.vectors[row]
    return [int(i) for i in c.ids[np.argsort(-scores)[:k]]]


def limited_count(text: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "simsearch_router_rate_limited_total" and s.labels.get("limited_by") == "key"
    )


def test_every_method_sync(cluster: SmallCluster, keyed: Service, tmp_path: Path) -> None:
    with Client(keyed.url, api_key=SEARCH) as client:
        assert client.live() and client.ready().status == "ready"
        assert client.health().status == "healthy" and client.stats().total_vectors == N
        one = client.search_vector(cluster.vectors[5], k=4)
        assert [h.id for h in one.results] == nearest(cluster, 5, 4) and one.coverage == 1.0
        batch = client.search_vector(vectors=cluster.vectors[5:7], k=2, strict=True)
        assert [[h.id for h in row] for row in batch.results] == [
            nearest(cluster, 5, 2),
            nearest(cluster, 6, 2),
        ]
        similar = client.search_similar(int(cluster.ids[9]), k=3, nprobe=1, refine=2)
        assert [h.id for h in similar.results] == nearest(cluster, 9, 3)
        photo = tmp_path / "q.jpg"
        photo.write_bytes(cluster.images[cluster.paths[1]])
        by_image = client.search_image(photo, k=3)
        assert len(by_image.results) == 3 and by_image.partitions == P
        key = cluster.paths[0]  # a 307 to moto (checked raw below), followed without the key
        raw = httpx.get(f"{keyed.url}/images/{int(cluster.ids[0])}", headers={"X-API-Key": SEARCH})
        assert raw.status_code == 307
        assert b"".join(client.image(int(cluster.ids[0]))) == cluster.images[key]
        assert client.save_image(int(cluster.ids[0]), tmp_path / "a.jpg") > 0
        assert (tmp_path / "a.jpg").read_bytes() == cluster.images[key]
        assert "simsearch_router_queries_total" in client.metrics()
    with Client(keyed.url, api_key=ADMIN) as admin:
        reloaded = admin.reload(timeout_s=10)
        assert set(reloaded.shards) == {s.url for s in cluster.shards}
        assert all(r.status == 200 for r in reloaded.shards.values())


def test_errors_are_typed_with_the_servers_code_and_request_id(
    cluster: SmallCluster, keyed: Service
) -> None:
    with Client(keyed.url) as anonymous, pytest.raises(Unauthorized) as raised:
        anonymous.search_similar(int(cluster.ids[1]))
    assert raised.value.code == "unauthorized"
    with Client(keyed.url, api_key=SEARCH) as client:
        with pytest.raises(Forbidden):
            client.reload(timeout_s=1)
        with pytest.raises(NotFound) as missing:
            client.search_similar(int(cluster.ids.max()) + 1, request_id="client-test-1")
        assert missing.value.request_id == "client-test-1"
        with pytest.raises(BadRequest) as bad:
            client.search_vector([0.1] * DIM, k=0)
        assert bad.value.code == "invalid_parameter" and "k" in bad.value.detail
        with pytest.raises(BadRequest) as wrong_dim:
            client.search_vector([0.1, 0.2])
        assert wrong_dim.value.code == "invalid_vector"
        with pytest.raises(NotFound):
            b"".join(client.image(int(cluster.ids[200])))  # indexed, no object in the bucket


def test_a_429_is_retried_after_retry_after(cluster: SmallCluster, keyed: Service) -> None:
    """A burst over `2/s:4` on one key: without retries the 5th query is a 429 with
    Retry-After; with them, the same burst all answers, some after waiting for it."""
    row = cluster.vectors[3]
    with Client(keyed.url, api_key=BURST, retry=RetryPolicy(attempts=1)) as once:
        with pytest.raises(RateLimited) as raised:
            for _ in range(8):
                once.search_vector(row, k=1)
        assert raised.value.code == "rate_limited" and (raised.value.retry_after_s or 0) >= 1
        before = limited_count(once.metrics())
    with Client(keyed.url, api_key=BURST) as client:
        started = time.monotonic()
        answers = [client.search_vector(row, k=1) for _ in range(4)]
        assert time.monotonic() - started >= 0.9  # at least one Retry-After was waited
        assert all(a.results[0].id == int(cluster.ids[3]) for a in answers)
        assert limited_count(client.metrics()) > before


def test_every_method_async(cluster: SmallCluster, keyed: Service, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with AsyncClient(keyed.url, api_key=SEARCH) as client:
            assert await client.live() and (await client.ready()).status == "ready"
            assert (await client.health()).coverage == 1.0
            assert (await client.stats()).partitions == P
            answers = await asyncio.gather(
                *(client.search_similar(int(cluster.ids[i]), k=2) for i in range(6))
            )  # six at once on a 2/s:4 key: the 429s are retried after Retry-After
            assert [a.results[0].id for a in answers] == [int(i) for i in cluster.ids[:6]]
            batch = await client.search_vector(vectors=cluster.vectors[:2], k=1)
            assert [row[0].id for row in batch.results] == [int(i) for i in cluster.ids[:2]]
            image = cluster.images[cluster.paths[2]]
            found = await client.search_image(image, filename="p.jpg", k=2)
            assert len(found.results) == 2
            chunks = [c async for c in client.image(int(cluster.ids[2]), chunk_size=4096)]
            assert b"".join(chunks) == image and len(chunks) > 1
            await client.save_image(int(cluster.ids[2]), tmp_path / "b.jpg")
            assert "simsearch_http_requests_total" in await client.metrics()
            with pytest.raises(Forbidden):
                await client.reload(timeout_s=1)
        async with AsyncClient(keyed.url, api_key=ADMIN) as admin:
            assert len((await admin.reload(timeout_s=10)).shards) == 2

    asyncio.run(scenario())
    assert (tmp_path / "b.jpg").read_bytes() == cluster.images[cluster.paths[2]]


def test_the_load_generator_goes_through_the_client(cluster: SmallCluster) -> None:
    with QueryLoad(cluster.router.url, cluster.vectors[:20], rate=25, k=3) as load:
        time.sleep(1.0)  # the load's own duration, not a wait for a condition
    summary = summarise(load.samples)
    assert summary.sent >= 15 and summary.failed == 0, summary.errors
    assert summary.versions == {cluster.version: summary.sent}
    first = sorted(load.samples, key=lambda s: s.sent)[0]
    assert list(first.ids) == nearest(cluster, first.query, 3)


def test_the_cli_sends_its_key_from_the_flag_or_the_environment(
    cluster: SmallCluster, keyed: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photo = tmp_path / "q.jpg"
    photo.write_bytes(cluster.images[cluster.paths[1]])
    search = ("search", str(photo), "--url", keyed.url, "-k", "2")
    monkeypatch.delenv("SIMSEARCH_API_KEY", raising=False)
    anonymous = run_cli(*search, cwd=tmp_path, timeout_s=120)
    assert anonymous.returncode == 1 and json.loads(anonymous.stdout)["error"] == "unauthorized"
    flagged = run_cli(*search, "--api-key", SEARCH, cwd=tmp_path, timeout_s=120)
    assert flagged.returncode == 0, flagged.stderr
    assert len(json.loads(flagged.stdout)["results"]) == 2
    monkeypatch.setenv("SIMSEARCH_API_KEY", SEARCH)
    from_env = run_cli(*search, cwd=tmp_path, timeout_s=120)
    assert from_env.returncode == 0, from_env.stderr


# ---- collections and filters (issue #14)


@dataclass(frozen=True)
class Second:
    """The second collection as written: its version, ids, unit vectors and keys."""

    version: str
    ids: np.ndarray
    vectors: np.ndarray
    paths: list[str]

    def nearest(self, query: np.ndarray, k: int, rows: list[int] | None = None) -> list[int]:
        """The exact top-k ids among `rows` (all by default)."""
        chosen = np.arange(len(self.ids)) if rows is None else np.asarray(rows)
        scores = self.vectors[chosen] @ query
        return [int(i) for i in self.ids[chosen[np.argsort(-scores)[:k]]]]


@pytest.fixture(scope="module")
def second(cluster: SmallCluster, keyed: Service) -> Second:
    """`second` published into the cluster's store, then waited for until fully served."""
    paths = cluster.paths[:SECOND_N]
    x = np.random.default_rng(11).standard_normal((SECOND_N, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    layout = IndexLayout(open_store(cluster.router_env["SIMSEARCH_STORE"]), SECOND)
    model = ModelInfo(name=MODEL, dim=DIM)
    source = f"s3://{BUCKET}/lib"  # the same photos: the first three keys have objects
    rows = {p: builtin_row(p, 1000 + i, None) for i, p in enumerate(paths)}
    manifest = write_index(
        layout,
        key_ids(paths),
        x,
        paths,
        model,
        partitions=2,
        source=source,
        metadata=Metadata(dict(BUILTIN_FIELDS), rows),
    )
    with Client(keyed.url, api_key=ADMIN) as client:
        client.reload(timeout_s=10)  # the shards look now, not at their next poll

        def served() -> bool:
            return client.collection(SECOND).coverage == 1.0

        wait_for(served, 60, f"collection {SECOND} served", ignore=(CollectionNotFound,))
    return Second(manifest.version, key_ids(paths), x, paths)


def test_collections_are_listed_and_described(
    cluster: SmallCluster, keyed: Service, second: Second
) -> None:
    with Client(keyed.url, api_key=SEARCH) as client:
        listing = client.collections()
        by_name = {c.name: c for c in listing.collections}
        assert listing.default == "default" and {"default", SECOND} <= set(by_name)
        default = by_name["default"]
        assert (default.version, default.vectors, default.partitions) == (cluster.version, N, P)
        assert (default.dim, default.model, default.coverage) == (DIM, MODEL, 1.0)
        assert not default.partial
        detail = client.collection(SECOND)
        assert (detail.version, detail.vectors, detail.partitions) == (second.version, SECOND_N, 2)
        assert [(v.version, v.live) for v in detail.versions] == [(second.version, True)]
        with pytest.raises(CollectionNotFound) as missing:
            client.collection("no-such-collection")
        assert missing.value.status == 404 and "no-such-collection" in missing.value.detail


def test_searches_and_downloads_in_a_collection(
    cluster: SmallCluster, keyed: Service, second: Second, tmp_path: Path
) -> None:
    query = second.vectors[5]
    with Client(keyed.url, api_key=SEARCH) as client:
        one = client.search_vector(query, k=4, collection=SECOND)
        assert [h.id for h in one.results] == second.nearest(query, 4)
        assert (one.index_version, one.partitions, one.coverage) == (second.version, 2, 1.0)
        assert one.results[0].url == f"/collections/{SECOND}/images/{one.results[0].id}"
        assert client.search_vector(query, k=1).index_version == cluster.version  # the default
        batch = client.search_vector(vectors=second.vectors[:2], k=1, collection=SECOND)
        assert [row[0].id for row in batch.results] == [int(i) for i in second.ids[:2]]
        similar = client.search_similar(int(second.ids[7]), k=3, collection=SECOND, strict=True)
        assert [h.id for h in similar.results] == second.nearest(second.vectors[7], 3)
        photo = cluster.images[cluster.paths[1]]
        by_image = client.search_image(photo, filename="q.jpg", k=3, collection=SECOND)
        assert len(by_image.results) == 3 and by_image.index_version == second.version
        first = int(second.ids[0])
        assert b"".join(client.image(first, collection=SECOND)) == cluster.images[cluster.paths[0]]
        assert client.save_image(first, tmp_path / "a.jpg", collection=SECOND) > 0
        with pytest.raises(NotFound) as not_in_second:  # a default-collection id only
            client.search_similar(int(cluster.ids[100]), collection=SECOND)
        assert type(not_in_second.value) is NotFound
        with pytest.raises(CollectionNotFound):
            client.search_vector(query, collection="nope")
        with pytest.raises(CollectionNotFound):
            client.search_similar(first, collection="nope")
        with pytest.raises(CollectionNotFound):
            b"".join(client.image(first, collection="nope"))


def test_a_filter_the_collection_cannot_take_is_an_invalid_filter(
    cluster: SmallCluster, keyed: Service, second: Second
) -> None:
    """On the old routes and a collection's: a field no collection has is a 400."""
    bad = {"field": "no_such_field", "eq": "x"}
    photo = cluster.images[cluster.paths[1]]
    with Client(keyed.url, api_key=SEARCH) as client:
        for collection in (None, SECOND):
            with pytest.raises(InvalidFilter) as raised:
                client.search_vector(second.vectors[0], collection=collection, filter=bad)
            assert (raised.value.status, raised.value.code) == (400, "invalid_filter")
            with pytest.raises(InvalidFilter):
                client.search_similar(int(second.ids[0]), collection=collection, filter=bad)
            with pytest.raises(InvalidFilter):
                client.search_image(photo, collection=collection, filter=bad)


def test_filtered_searches_in_a_collection(keyed: Service, second: Second) -> None:
    """Filters on the built-in `key`: exact answers among the rows the filter keeps."""
    with Client(keyed.url, api_key=SEARCH) as client:
        assert "key" in (client.collection(SECOND).metadata or {})
        prefix = {"field": "key", "prefix": "photos/000"}  # keys 0000..0009
        kept = [i for i, p in enumerate(second.paths) if p.startswith("photos/000")]
        query = second.vectors[25]
        found = client.search_vector(query, k=5, collection=SECOND, filter=prefix)
        assert [h.id for h in found.results] == second.nearest(query, 5, kept)
        similar = client.search_similar(int(second.ids[3]), k=3, collection=SECOND, filter=prefix)
        assert similar.results[0].id == int(second.ids[3])
        assert all(h.path.startswith("photos/000") for h in similar.results)
        picked = {"field": "key", "in": [second.paths[i] for i in (4, 30, 31)]}
        both = {"and": [picked, {"not": prefix}]}
        only = client.search_vector(query, k=10, collection=SECOND, filter=both)
        assert {h.id for h in only.results} == {int(second.ids[30]), int(second.ids[31])}
        huge = {"or": [{"field": "key", "eq": f"k{i}"} for i in range(70)]}
        with pytest.raises(FilterTooLarge) as raised:
            client.search_vector(query, collection=SECOND, filter=huge)
        assert raised.value.code == "filter_too_large"


def test_collections_async(cluster: SmallCluster, keyed: Service, second: Second) -> None:
    async def scenario() -> None:
        async with AsyncClient(keyed.url, api_key=SEARCH) as client:
            assert SECOND in {c.name for c in (await client.collections()).collections}
            assert (await client.collection(SECOND)).version == second.version
            answers = await asyncio.gather(
                *(client.search_similar(int(i), k=1, collection=SECOND) for i in second.ids[:3])
            )
            assert [a.results[0].id for a in answers] == [int(i) for i in second.ids[:3]]
            chunks = [c async for c in client.image(int(second.ids[1]), collection=SECOND)]
            assert b"".join(chunks) == cluster.images[cluster.paths[1]]
            with pytest.raises(CollectionNotFound):
                await client.search_vector(second.vectors[0], collection="nope")
            with pytest.raises(InvalidFilter):
                await client.search_image(
                    cluster.images[cluster.paths[2]],
                    collection=SECOND,
                    filter={"field": "no_such_field", "in": [1, 2]},
                )

    asyncio.run(scenario())


def test_the_cli_searches_a_collection(
    cluster: SmallCluster, keyed: Service, second: Second, tmp_path: Path
) -> None:
    photo = tmp_path / "q.jpg"
    photo.write_bytes(cluster.images[cluster.paths[1]])
    search = ("search", str(photo), "--url", keyed.url, "--api-key", SEARCH, "-k", "3")
    done = run_cli(*search, "--collection", SECOND, cwd=tmp_path, timeout_s=120)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["index_version"] == second.version and len(answer["results"]) == 3
    bad = '{"field": "no_such_field", "eq": 1}'
    refused = run_cli(*search, "--collection", SECOND, "--filter", bad, cwd=tmp_path)
    assert refused.returncode == 1 and json.loads(refused.stdout)["error"] == "invalid_filter"
    unknown = run_cli(*search, "--collection", "nope", cwd=tmp_path, timeout_s=120)
    assert json.loads(unknown.stdout)["error"] == "collection_not_found"
