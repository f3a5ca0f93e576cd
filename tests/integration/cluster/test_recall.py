"""Live recall and drift end to end: real shard and router processes over small IVF
indexes in moto S3.

The index is IVF fast-scan over raw 32-d vectors (no PCA, float32 features), so the truth
is a plain brute force over the vectors this test generated. The router samples every
query (fraction 1, a high cap, a short window) and re-runs it exactly on the shards. The
test computes the recall of the answers it got itself, with plain set intersection
(random floats: no ties), and the router's gauge must agree within ±0.02; the same
queries with `nprobe=1` must then pull the gauge down to their own offline recall within
one window, when the first round's samples have expired.

Drift (acceptance figure 3) uses a second collection, `photos`, whose vectors lie around
64 centres as embeddings do: queries drawn like them leave the shards' drift ratio near
1; queries from a shifted distribution (uniform directions, far from every centre) raise
it, and their live recall, at the same nprobe, is lower.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from simsearch.common.layout import IndexLayout
from simsearch.common.manifest import IndexParams, Manifest, ModelInfo
from simsearch.indexer.writer import write_index
from tests.support.motoindex import moto_layout
from tests.support.procs import Service, start_service, wait_for
from tests.support.s3server import AWS

pytestmark = pytest.mark.integration

P, N, DIM, K = 4, 3000, 32, 10
NQ = 40  # queries per round (four requests of ten vectors)
WINDOW_S = 25.0
PARAMS = IndexParams(
    factory=f"IVF32,PQ{DIM}x4", nlist=32, pq_m=DIM, nbits=4, nprobe=8, refine=10, train_size=N
)
AWS_ENV = AWS  # the test credentials every process is given
BUCKET = "recall"


def unit(rows: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((rows, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


VECTORS = unit(N, 0)
IDS = np.arange(N, dtype=np.int64) * 7919 + 3
QUERIES = unit(NQ, 1)  # not indexed: what live traffic looks like
DRIFT_WINDOW_S = 10.0  # the shards' drift window


def clustered(rows: int, seed: int) -> np.ndarray:
    """Unit vectors around 64 fixed centres: the `photos` collection's distribution."""
    centres = unit(64, 100)
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(0, len(centres), rows)]
    x = x + 0.12 * rng.standard_normal(x.shape).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


PHOTOS = clustered(N, 10)
LIKE_PHOTOS = clustered(NQ, 11)  # new draws of the same distribution
SHIFTED = unit(NQ, 12)  # uniform directions: nothing like the indexed photos


@dataclass
class Cluster:
    router: Service
    manifest: Manifest
    photos: Manifest  # the clustered collection of the drift test


@pytest.fixture(scope="module")
def cluster(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One IVF version (with its build-time probe) in moto; two shards; a router that
    samples every query."""
    work = tmp_path_factory.mktemp("recall")
    with moto_layout(s3_endpoint, BUCKET) as layout:
        paths = [f"img/{i}.jpg" for i in range(N)]
        manifest = write_index(
            layout, IDS, VECTORS, paths, ModelInfo(name="test", dim=DIM), partitions=P,
            params=PARAMS,
        )  # fmt: skip
        photos = write_index(
            IndexLayout(layout.store, "photos"), IDS, PHOTOS, paths,
            ModelInfo(name="test", dim=DIM), partitions=P, params=PARAMS,
        )  # fmt: skip
    shared = {**AWS_ENV, "SIMSEARCH_S3_ENDPOINT_URL": s3_endpoint, "SIMSEARCH_LOG_FORMAT": "text"}
    shard_env = {
        **shared,
        "SIMSEARCH_STORE": f"s3://{BUCKET}/idx",
        "SIMSEARCH_REPLICAS": "2",
        "SIMSEARCH_DRIFT_WINDOW_S": str(DRIFT_WINDOW_S),
    }
    with (
        start_service("shard", _shard(shard_env, 0, work)) as s0,
        start_service("shard", _shard(shard_env, 1, work)) as s1,
        start_service(
            "router",
            {
                **shared,
                "SIMSEARCH_SHARDS": f"{s0.url},{s1.url}",
                "SIMSEARCH_POLL_S": "0.2",
                "SIMSEARCH_RECALL_FRACTION": "1",
                "SIMSEARCH_RECALL_MAX_PER_S": "1000",
                "SIMSEARCH_RECALL_QUEUE": "1000",
                "SIMSEARCH_RECALL_WINDOW_S": str(WINDOW_S),
                "SIMSEARCH_RECALL_LINGER_S": "0.5",
                "SIMSEARCH_RECALL_MIN_SAMPLES": "20",
            },
        ) as router,
    ):
        yield Cluster(router, manifest, photos)


def _shard(env: dict[str, str], ordinal: int, work: Path) -> dict[str, str]:
    return {
        **env,
        "SIMSEARCH_SHARD_ORDINAL": str(ordinal),
        "SIMSEARCH_CACHE_DIR": str(work / f"cache-{ordinal}"),
    }


def search_all(
    router: Service, nprobe: int | None, queries: np.ndarray = QUERIES, route: str = ""
) -> list[list[int]]:
    """Every query through the router (ten vectors a request); the ids it answered.
    `route` prefixes the search route (`/collections/photos`)."""
    found: list[list[int]] = []
    for start in range(0, NQ, 10):
        body: dict[str, object] = {"vectors": queries[start : start + 10].tolist(), "k": K}
        if nprobe is not None:
            body["nprobe"] = nprobe
        response = httpx.post(f"{router.url}{route}/search/vector", json=body, timeout=30)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert not answer["partial"]
        found.extend([int(hit["id"]) for hit in row] for row in answer["results"])
    return found


def offline_recall(
    found: list[list[int]], queries: np.ndarray = QUERIES, base: np.ndarray = VECTORS
) -> float:
    """Mean |answer ∩ true top k| / k, the truth by brute force in float64."""
    scores = queries.astype(np.float64) @ base.astype(np.float64).T
    truth = IDS[np.argsort(-scores, axis=1, kind="stable")[:, :K]]
    hits = [len(set(f) & set(t.tolist())) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits)) / K


def gauges(router: Service, version: str, collection: str = "default") -> dict[str, float]:
    """The recall series of `version` (and the check counters) from the router's /metrics."""
    text = httpx.get(f"{router.url}/metrics", timeout=10).text
    values: dict[str, float] = {}
    labels = f'collection="{collection}",version="{version}"'
    for name in ("at_k", "samples", "baseline", "drift"):
        found = re.search(rf"^simsearch_recall_{name}\{{{labels}\}} (\S+)$", text, re.MULTILINE)
        if found:
            values[name] = float(found.group(1))
    for found in re.finditer(
        r'^simsearch_recall_checks_total\{outcome="(\w+)"\} (\S+)$', text, re.MULTILINE
    ):
        values[f"checks_{found.group(1)}"] = float(found.group(2))
    return values


def test_live_recall_follows_the_answers_and_drops_with_nprobe_one(cluster: Cluster) -> None:
    router, version = cluster.router, cluster.manifest.version
    wait_for(lambda: "baseline" in gauges(router, version), 30, "the baseline gauge")
    first = offline_recall(search_all(router, None))

    def settled(expected: float) -> bool:
        """Both rounds re-run, and only the second one's samples left in the window."""
        now = gauges(router, version)
        done = now.get("checks_ok") == 2 * NQ and now.get("samples") == NQ
        return done and abs(now.get("at_k", -1) - expected) <= 0.02

    wait_for(lambda: gauges(router, version).get("samples") == NQ, 60, f"{NQ} samples")
    now = gauges(router, version)
    assert abs(now["at_k"] - first) <= 0.02, (now, first)  # acceptance figure 1
    assert now["checks_ok"] == NQ and now["checks_not_exact"] == 0

    stats = httpx.get(f"{router.url}/stats", timeout=10).json()
    (row,) = [r for r in stats["recall"] if r["version"] == version]
    assert row["samples"] == NQ and row["window_s"] == WINDOW_S
    assert abs(row["recall"] - now["at_k"]) < 1e-9
    assert cluster.manifest.probe is not None
    assert row["baseline"] == pytest.approx(cluster.manifest.probe.recall)

    low = offline_recall(search_all(router, nprobe=1))
    assert low < min(first, row["baseline"]) - 0.1, (low, first)  # nprobe=1 is worse here
    # within one window the first round's samples expire and only nprobe=1's are left
    wait_for(lambda: settled(low), WINDOW_S + 30, f"the gauge at the nprobe=1 recall {low}")
    assert gauges(router, version)["drift"] == 1.0  # 40 ≥ 20 samples, far below baseline


def drift_ratio(router: Service, version: str) -> float | None:
    """The drift ratio the router's /stats reports for `version` (the shards' largest)."""
    stats = httpx.get(f"{router.url}/stats", timeout=10).json()
    rows = [r for r in stats["recall"] if r["version"] == version]
    return rows[0]["drift_ratio"] if rows else None


def test_shifted_queries_raise_the_drift_ratio_and_lower_live_recall(cluster: Cluster) -> None:
    router, version = cluster.router, cluster.photos.version
    fit = cluster.photos.centroid_fit
    assert fit is not None and fit.indexed > 0  # the baseline the shards compare with
    route = "/collections/photos"
    like = offline_recall(search_all(router, None, LIKE_PHOTOS, route), LIKE_PHOTOS, PHOTOS)
    # queries drawn like the data: the ratio stays near 1, recall high
    wait_for(lambda: drift_ratio(router, version) is not None, 30, "a drift ratio")
    calm = drift_ratio(router, version)
    assert calm is not None and 0.85 < calm < 1.15, calm
    photos = lambda: gauges(router, version, "photos")  # noqa: E731
    wait_for(lambda: photos().get("samples") == NQ, 60, f"{NQ} samples of the photos")
    assert abs(photos()["at_k"] - like) <= 0.02
    # shifted queries: the IVF fits them worse, and both signals move
    shifted = offline_recall(search_all(router, None, SHIFTED, route), SHIFTED, PHOTOS)
    assert shifted < like - 0.05, (shifted, like)

    def drifted() -> bool:
        """Shifted traffic keeps coming (one round a poll) until the calm queries have left
        the shards' window and the ratio is the shifted queries' own."""
        search_all(router, None, SHIFTED, route)
        return (drift_ratio(router, version) or 0) > 1.3

    wait_for(drifted, DRIFT_WINDOW_S + 30, "the drift ratio above 1.3")
    # live recall follows the shifted answers down once the calm ones leave the window
    wait_for(
        lambda: photos().get("at_k", 1.0) <= shifted + 0.02,
        WINDOW_S + 30,
        f"the gauge at the shifted queries' recall {shifted}",
    )
