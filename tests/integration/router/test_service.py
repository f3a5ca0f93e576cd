"""The router as a real process over real HTTP, in front of two real shard processes, a
real embedder and a real S3-protocol server (moto) holding the images.

The index (300 random unit vectors, exact IVF1,Flat, P=8) is written with the indexer's
own writer to a file:// store; the shards load their halves by the placement. The
sharded answer must equal brute force over the same vectors. Then one shard is killed
(answers flagged partial, strict → 503, /health degraded) and restarted on the same port
(the router recovers by itself, observed with a deadline, never a fixed sleep).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from simsearch.common.placement import partitions_for
from simsearch.common.wire import decode_vectors
from tests.support.cluster import DIM, MODEL, N, P, SmallCluster, small_cluster, spawn
from tests.support.procs import Service, wait_for, wait_ready
from tests.support.s3server import free_port, stop_process

pytestmark = pytest.mark.integration

K = 10


Cluster = SmallCluster


@pytest.fixture(scope="module")
def cluster(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with small_cluster(s3_endpoint, tmp_path_factory.mktemp("router-index")) as running:
        yield running


def brute(c: Cluster, q: np.ndarray, k: int = K) -> list[list[int]]:
    scores = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ c.vectors.T
    return c.ids[np.argsort(-scores, axis=1)[:, :k]].tolist()


def search(c: Cluster, body: dict[str, object], **params: str) -> httpx.Response:
    return httpx.post(f"{c.router.url}/search/vector", json=body, params=params, timeout=10)


def test_vector_search_equals_brute_force_with_full_coverage(cluster: Cluster) -> None:
    q = np.random.default_rng(11).standard_normal((5, DIM)).astype(np.float32) * 7  # not unit
    for row, expected in zip(q, brute(cluster, q), strict=True):
        response = search(cluster, {"vector": row.tolist(), "k": K})
        assert response.status_code == 200, response.text
        body = response.json()
        assert [hit["id"] for hit in body["results"]] == expected
        assert body["status"] == "success" and body["coverage"] == 1.0 and not body["partial"]
        assert body["index_version"] == cluster.version and body["k"] == K
        assert body["partitions"] == P and body["partitions_answered"] == P
        hit = body["results"][0]
        assert hit["rank"] == 1 and hit["url"] == f"/images/{hit['id']}"
        assert hit["path"] == cluster.paths[list(cluster.ids).index(hit["id"])]
        scores = [h["similarity_score"] for h in body["results"]]
        assert scores == sorted(scores, reverse=True) and -1 <= scores[-1] <= scores[0] <= 1
        # a query string takes FastAPI's declared route instead of the fast path: same answer
        declared = search(cluster, {"vector": row.tolist(), "k": K}, strict="false").json()
        assert declared["results"] == body["results"]


def test_a_batch_of_vectors_gets_one_result_list_each(cluster: Cluster) -> None:
    q = np.random.default_rng(12).standard_normal((3, DIM)).astype(np.float32)
    response = search(cluster, {"vectors": q.tolist(), "k": 4})
    assert response.status_code == 200, response.text
    assert [[h["id"] for h in row] for row in response.json()["results"]] == brute(cluster, q, 4)


def test_similar_returns_the_item_itself_first(cluster: Cluster) -> None:
    item = int(cluster.ids[42])
    response = httpx.get(f"{cluster.router.url}/search/similar/{item}", params={"k": 5})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert results[0]["id"] == item and results[0]["similarity_score"] == pytest.approx(1.0)
    assert [h["id"] for h in results] == brute(cluster, cluster.vectors[42:43], 5)[0]


def test_images_are_streamed_from_the_store(cluster: Cluster) -> None:
    key = cluster.paths[0]
    response = httpx.get(f"{cluster.router.url}/images/{int(cluster.ids[0])}")
    assert response.status_code == 200, response.text
    assert response.content == cluster.images[key]
    assert response.headers["content-type"] == "image/jpeg"
    missing_object = httpx.get(f"{cluster.router.url}/images/{int(cluster.ids[200])}")
    assert missing_object.status_code == 404


def test_image_search_embeds_then_searches(cluster: Cluster) -> None:
    photo = cluster.images[cluster.paths[1]]
    files = {"file": ("p.jpg", photo, "image/jpeg")}
    embedded = httpx.post(
        f"{cluster.embedder.url}/embed", params={"encoding": "base64"}, files=files, timeout=60
    ).json()
    expected = brute(cluster, decode_vectors(embedded["vectors_b64"], DIM), 3)[0]
    response = httpx.post(
        f"{cluster.router.url}/search/image", params={"k": 3}, files=files, timeout=60
    )
    assert response.status_code == 200, response.text
    assert [h["id"] for h in response.json()["results"]] == expected
    broken = {"file": ("x.jpg", photo[: len(photo) // 3], "image/jpeg")}
    refused = httpx.post(f"{cluster.router.url}/search/image", files=broken, timeout=60)
    assert refused.status_code == 400 and refused.json()["error"] == "corrupt_image"
    not_image = {"file": ("x.jpg", b"plain text, not an image", "image/jpeg")}
    refused = httpx.post(f"{cluster.router.url}/search/image", files=not_image, timeout=60)
    assert refused.status_code == 415, refused.text


def embed_calls(c: Cluster) -> float:
    """How many requests the embedder has served on /embed (its own HTTP metrics)."""
    text = httpx.get(f"{c.embedder.url}/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "simsearch_http_requests_total" and sample.labels["route"] == "/embed"
    )


def test_image_search_checks_its_parameters_before_embedding(cluster: Cluster) -> None:
    """A bad k (or k·refine over the candidate limit) is refused before the image is sent
    to the embedder: its /embed count does not move."""
    files = {"file": ("p.jpg", cluster.images[cluster.paths[1]], "image/jpeg")}
    before = embed_calls(cluster)
    cases = [
        ({"k": "0"}, 400, "between 1 and 1000"),
        ({"k": "1001"}, 400, "between 1 and 1000"),
        ({"k": "1000", "refine": "50"}, 400, "candidates per query"),
        ({"refine": "101"}, 422, "refine"),
        ({"nprobe": "0"}, 422, "nprobe"),
    ]
    for params, status, words in cases:
        response = httpx.post(
            f"{cluster.router.url}/search/image", params=params, files=files, timeout=60
        )
        assert response.status_code == status, response.text
        assert words in response.json()["detail"]
    assert embed_calls(cluster) == before
    ok = httpx.post(f"{cluster.router.url}/search/image", params={"k": 2}, files=files, timeout=60)
    assert ok.status_code == 200, ok.text
    assert embed_calls(cluster) == before + 1  # the counter does count what is embedded


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"vector": [0.1] * (DIM - 1)}, 400, "the index has dim 1280"),
        ({"vector": [0.0] * DIM}, 400, "all zeros"),
        ({"vector": [0.1] * DIM, "k": 0}, 400, "between 1 and 1000"),
        ({"vector": [0.1] * DIM, "k": 1001}, 400, "between 1 and 1000"),
        ({"vector": [0.1] * DIM, "refine": 0}, 422, "refine"),
        ({"k": 3}, 422, "exactly one of"),
        ({"vector": ["a"] * DIM}, 422, "vector"),
    ],
)
def test_bad_vector_queries_get_a_clear_4xx(
    cluster: Cluster, body: dict[str, object], status: int, words: str
) -> None:
    response = search(cluster, body)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]


def test_nan_unknown_ids_and_bad_requests_are_4xx(cluster: Cluster) -> None:
    url = cluster.router.url
    nan = '{"vector": [NaN' + ", 0.1" * (DIM - 1) + "]}"
    response = httpx.post(
        f"{url}/search/vector", content=nan, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and "NaN" in response.json()["detail"]
    unknown = int(cluster.ids.max()) + 1
    assert httpx.get(f"{url}/search/similar/{unknown}").status_code == 404
    assert httpx.get(f"{url}/images/{unknown}").status_code == 404
    assert httpx.get(f"{url}/images/-5").status_code == 404
    assert httpx.get(f"{url}/images/not-a-number").status_code == 422
    as_json = httpx.post(f"{url}/search/image", json={"file": "x"})
    assert as_json.status_code == 415


def test_health_stats_and_metrics_when_all_is_well(cluster: Cluster) -> None:
    url = cluster.router.url
    health = httpx.get(f"{url}/health").json()
    assert health["status"] == "healthy" and health["coverage"] == 1.0
    assert health["shards"] == {"total": 2, "up": 2, "down": 0} and health["total_vectors"] == N
    stats = httpx.get(f"{url}/stats").json()
    assert stats["total_vectors"] == N and stats["partitions"] == P and stats["dim"] == DIM
    assert stats["index_version"] == cluster.version and stats["model"] == MODEL
    held = {s["ordinal"]: s["ready"] for s in stats["shards"]}
    assert held == {o: partitions_for(o, P, 2) for o in (0, 1)}
    metrics = httpx.get(f"{url}/metrics").text
    assert 'simsearch_router_queries_total{kind="vector",outcome="ok"}' in metrics
    assert "simsearch_router_query_duration_seconds_bucket" in metrics


def test_presigned_redirect_and_a_dead_shard_url(cluster: Cluster, s3_endpoint: str) -> None:
    """A second router: public S3 endpoint set, no embedder, and one static URL where
    nobody listens (it is down, the two live shards still cover everything)."""
    dead = f"http://127.0.0.1:{free_port()}"
    env = {
        **cluster.router_env,
        "SIMSEARCH_SHARDS": cluster.router_env["SIMSEARCH_SHARDS"] + "," + dead,
        "SIMSEARCH_PUBLIC_S3_ENDPOINT": s3_endpoint.replace("127.0.0.1", "localhost"),
        "SIMSEARCH_EMBEDDER_URL": "",
    }
    router = spawn("router", env)
    try:
        wait_ready(router, "/health/ready", 30)
        redirect = httpx.get(f"{router.url}/images/{int(cluster.ids[2])}")
        assert redirect.status_code == 307
        location = redirect.headers["location"]
        assert location.startswith(env["SIMSEARCH_PUBLIC_S3_ENDPOINT"])
        assert httpx.get(location).content == cluster.images[cluster.paths[2]]
        body = search(cluster_at(cluster, router), {"vector": [0.1] * DIM}).json()
        assert body["coverage"] == 1.0 and not body["partial"]
        health = httpx.get(f"{router.url}/health").json()
        assert health["status"] == "degraded" and health["shards"]["down"] == 1
        assert not health["embedder"]
        files = {"file": ("p.jpg", cluster.images[cluster.paths[0]], "image/jpeg")}
        no_embedder = httpx.post(f"{router.url}/search/image", files=files)
        assert no_embedder.status_code == 503
        assert "SIMSEARCH_EMBEDDER_URL" in no_embedder.json()["detail"]
    finally:
        stop_process(router.process)


def cluster_at(c: Cluster, router: Service) -> Cluster:
    return Cluster(**{**c.__dict__, "router": router})


def test_a_frozen_shard_costs_at_most_the_deadline(cluster: Cluster) -> None:
    """SIGSTOP: the shard accepts connections but never answers (a hung pod)."""
    q = {"vector": cluster.vectors[9].tolist(), "k": K}
    cluster.shards[1].process.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        body = search(cluster, q).json()
        assert time.monotonic() - started < 3.0 + 1.5  # SIMSEARCH_TIMEOUT_MS=3000 + slack
        assert body["partial"] and body["coverage"] == len(partitions_for(0, P, 2)) / P
    finally:
        cluster.shards[1].process.send_signal(signal.SIGCONT)
    wait_for(lambda: search(cluster, q).json().get("coverage") == 1.0, 30, "recovery")


def test_a_killed_shard_gives_flagged_partial_answers_then_recovers(cluster: Cluster) -> None:
    url = cluster.router.url
    q = {"vector": cluster.vectors[7].tolist(), "k": K}
    stop_process(cluster.shards[1].process)
    response = search(cluster, q)
    assert response.status_code == 200, response.text
    body = response.json()
    alive = partitions_for(0, P, 2)
    assert body["partial"] and body["coverage"] == pytest.approx(len(alive) / P)
    expected = [int(i) for i in brute(cluster, cluster.vectors[7:8], N)[0] if int(i) % P in alive]
    assert [h["id"] for h in body["results"]] == expected[:K]
    strict = search(cluster, q, strict="true")
    assert strict.status_code == 503 and strict.json()["error"] == "partial_answer"
    wait_for(lambda: httpx.get(f"{url}/health").json()["status"] == "degraded", 10, "degraded")
    # still ready: it answers (flagged partial), so a Service must keep sending it queries
    assert httpx.get(f"{url}/health/ready").status_code == 200
    port = int(cluster.shards[1].url.rsplit(":", 1)[1])
    cluster.shards[1] = spawn("shard", cluster.shard_env(1), port)
    wait_for(lambda: search(cluster, q).json().get("coverage") == 1.0, 60, "recovery")
    assert httpx.get(f"{url}/health").json()["status"] == "healthy"
    assert cluster.router.process.poll() is None  # and it never crashed
