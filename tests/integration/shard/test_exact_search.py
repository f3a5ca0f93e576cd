"""A shard process answers the recall monitor's exact requests and reports drift (S3, moto).

One fast-scan IVF version (the plan forced: 3,000 vectors would get the exact plan)
whose manifest carries a `centroid_fit`, as the indexer writes it. Covered: an `exact`
request over HTTP answers `exact_scan: true` with the true top k (brute force over the
indexed vectors) and k wide; a normal request still answers `exact_scan: false` with its
k·refine candidates, whose exact scores agree bit for bit with the exact answer's for
the same ids; after some searches `/info` reports the drift fields and `/metrics`
exposes the exact-scan and drift series.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from simsearch.common.layout import IndexLayout
from simsearch.common.manifest import CentroidFit, IndexParams, Manifest, ModelInfo, new_version_id
from simsearch.common.wire import decode_array, encode_array
from simsearch.indexer.writer import write_index
from tests.support.motoindex import moto_layout, one_shard_env
from tests.support.procs import Service, start_service

pytestmark = pytest.mark.integration

P = 4
N = 3000
DIM = 32
K = 10
IDS = np.arange(N, dtype=np.int64) * 7919 + 11
PATHS = [f"img/{i}.jpg" for i in range(N)]
PARAMS = IndexParams(
    factory=f"IVF32,PQ{DIM}x4", nlist=32, pq_m=DIM, nbits=4, nprobe=4, refine=3, train_size=N
)
FIT = CentroidFit(trained=0.8, indexed=0.8, p90=0.9, sample=500)


def unit(rows: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((rows, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


VECTORS = unit(N, 0)


def with_fit(layout: IndexLayout, base: Manifest, fit: CentroidFit) -> Manifest:
    """Publish a copy of `base` (same files, a new version id) whose manifest has `fit`."""
    version = new_version_id()
    while version <= base.version:
        time.sleep(0.01)
        version = new_version_id()
    update = {"version": version, "parent": base.version, "centroid_fit": fit}
    manifest = base.model_copy(update=update)
    layout.publish(manifest)
    return manifest


@pytest.fixture(scope="module")
def published(s3_endpoint: str) -> Iterator[tuple[str, Manifest]]:
    with moto_layout(s3_endpoint, "exact") as layout:
        model = ModelInfo(name="test", dim=DIM)
        base = write_index(
            layout, IDS, VECTORS, PATHS, model, partitions=P, params=PARAMS, probe_recall=False
        )
        yield "s3://exact/idx", with_fit(layout, base, FIT)


@pytest.fixture(scope="module")
def shard(
    published: tuple[str, Manifest], s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    env = one_shard_env(
        published[0],
        s3_endpoint,
        tmp_path_factory.mktemp("cache"),
        SIMSEARCH_EXACT_BLOCK_ROWS="256",  # several blocks per partition
    )
    with start_service("shard", env) as service:
        yield service


def search(shard: Service, version: str, q: np.ndarray, **extra: Any) -> dict[str, Any]:
    body = {
        "version": version,
        "partitions": list(range(P)),
        "k": K,
        "dim": DIM,
        "nq": len(q),
        "vectors_b64": encode_array(q, "<f4"),
        **extra,
    }
    answer = httpx.post(f"{shard.url}/search", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def arrays(body: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    shape = (body["nq"], body["width"])
    return decode_array(body["ids_b64"], "<i8", shape), decode_array(
        body["exact_b64"], "<f4", shape
    )


def test_an_exact_request_is_the_true_top_k(
    published: tuple[str, Manifest], shard: Service
) -> None:
    _, manifest = published
    q = unit(8, 1)
    exact = search(shard, manifest.version, q, exact=True)
    assert exact["exact_scan"] is True and exact["width"] == K
    ids, scores = arrays(exact)
    truth = np.einsum("qd,nd->qn", q, VECTORS)
    order = np.lexsort((np.broadcast_to(IDS, truth.shape), -truth), axis=1)[:, :K]
    assert np.array_equal(ids, IDS[order])
    assert np.allclose(scores, np.take_along_axis(truth, order, 1), atol=1e-6)
    assert exact["approx_b64"] == exact["exact_b64"]
    assert exact["paths"][0] == [PATHS[int(i - 11) // 7919] for i in ids[0]]

    normal = search(shard, manifest.version, q)
    assert normal["exact_scan"] is False and normal["width"] == K * PARAMS.refine
    normal_ids, normal_scores = arrays(normal)
    for row in range(len(q)):  # the same id has the same exact score on either path
        common = {int(i): s for i, s in zip(ids[row], scores[row], strict=True)}
        both = zip(normal_ids[row], normal_scores[row], strict=True)
        pairs = [(common[int(i)], s) for i, s in both if int(i) in common]
        assert pairs and all(a == b for a, b in pairs)


def test_info_and_metrics_report_drift_and_exact_scans(
    published: tuple[str, Manifest], shard: Service
) -> None:
    _, manifest = published
    for seed in range(3):
        search(shard, manifest.version, unit(4, 10 + seed))
    search(shard, manifest.version, unit(2, 20), exact=True)
    (version,) = httpx.get(f"{shard.url}/info", timeout=10).json()["versions"]
    assert version["drift_queries"] >= 12
    assert version["centroid_distance_indexed"] == FIT.indexed
    live = version["centroid_distance_live"]
    assert 0 < live < 2  # unit vectors: at most 2 from any centroid
    assert version["drift_ratio"] == pytest.approx(live / FIT.indexed)

    samples = scrape(shard)
    labels = {"collection": "default", "version": manifest.version}
    assert samples[("simsearch_drift_ratio", frozenset(labels.items()))] == pytest.approx(
        live / FIT.indexed
    )
    for source, value in (("live", pytest.approx(live)), ("indexed", FIT.indexed)):
        key = frozenset({**labels, "source": source}.items())
        assert samples[("simsearch_centroid_distance", key)] == value
    ok = ("simsearch_shard_exact_searches_total", frozenset({"outcome": "ok"}.items()))
    assert samples[ok] >= 1
    assert samples[("simsearch_shard_exact_seconds_count", frozenset())] >= 1


def scrape(shard: Service) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of /metrics by (name, labels)."""
    text = httpx.get(f"{shard.url}/metrics", timeout=10).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
