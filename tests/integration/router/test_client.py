"""`simsearch.client` against a real cluster: every method, sync and async, behind API keys
and a rate limit, and the load generator through it.

The small cluster (tests/support/cluster.py: 2 shards, an embedder, a router, moto S3)
plus a second router in front of the same shards with search and admin keys, a per-key
vector-search limit of `2/s:4`, and the public S3 endpoint set (so `/images/{id}` is a
307 the client follows without its key). Answers are checked against the index the
cluster wrote, not against another HTTP call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from simsearch.client import (
    AsyncClient,
    BadRequest,
    Client,
    Forbidden,
    NotFound,
    RateLimited,
    RetryPolicy,
    Unauthorized,
)
from simsearch.local.loadgen import QueryLoad, summarise
from tests.support.cluster import DIM, N, P, SmallCluster, small_cluster, spawn
from tests.support.procs import Service, wait_ready
from tests.support.s3server import stop_process

pytestmark = pytest.mark.integration

SEARCH, ADMIN, BURST = "search-key", "admin-key", "burst-key"


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
