"""A shard process answers filtered searches over a version with metadata tables (S3, moto).

The version's partitions carry `metadata.arrow` files and its manifest the schema
(`tests/support/metaindex.py` writes them with `build_table` / `write_table`). Covered:
the shard downloads and verifies the tables with the other files and reports the schema
in `/info`; a filtered `/search` answers only matching ids, on the exact path and on the
IVF path (the threshold set low), as brute force over the matching rows would; a bad
filter is a 400 with a reason, a malformed one a 422; the path counter counts each.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from simsearch.common.manifest import IndexParams, Manifest, ModelInfo
from simsearch.common.metadata import FieldType
from simsearch.common.wire import decode_array, encode_array
from simsearch.indexer.writer import write_index
from tests.support.metaindex import add_metadata, filtered_truth
from tests.support.motoindex import moto_layout, one_shard_env
from tests.support.procs import Service, start_service

pytestmark = pytest.mark.integration

P = 4
N = 3000
DIM = 32
K = 10
IDS = np.arange(N, dtype=np.int64) * 7919 + 11
PATHS = [f"photos/{2023 + i % 2}/img{i}.jpg" for i in range(N)]
LABELS = ["tulips", "roses", "daisies", "sunflowers", "dandelion"]
SCHEMA: dict[str, FieldType] = {"key": "string", "label": "string", "size": "int"}
ROWS: dict[int, dict[str, Any]] = {
    int(IDS[i]): {"key": PATHS[i], "label": LABELS[i % 5], "size": 1000 + i} for i in range(N)
}
PARAMS = IndexParams(
    factory=f"IVF32,PQ{DIM}x4", nlist=32, pq_m=DIM, nbits=4, nprobe=8, refine=10, train_size=N
)


def unit(rows: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((rows, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


VECTORS = unit(N, 0)


@pytest.fixture(scope="module")
def published(s3_endpoint: str) -> Iterator[tuple[str, Manifest]]:
    """One version with metadata tables in a bucket of the moto server."""
    with moto_layout(s3_endpoint, "filtered") as layout:
        model = ModelInfo(name="test", dim=DIM)
        base = write_index(
            layout, IDS, VECTORS, PATHS, model, partitions=P, params=PARAMS, probe_recall=False
        )
        yield "s3://filtered/idx", add_metadata(layout, base, ROWS, SCHEMA)


def env(store: str, endpoint: str, cache: Path, exact_max: int) -> dict[str, str]:
    return one_shard_env(store, endpoint, cache, SIMSEARCH_FILTER_EXACT_MAX=str(exact_max))


def search(shard: Service, version: str, q: np.ndarray, node: Any) -> httpx.Response:
    body = {
        "version": version,
        "partitions": list(range(P)),
        "k": K,
        "dim": DIM,
        "nq": len(q),
        "vectors_b64": encode_array(q, "<f4"),
        "filter": node,
    }
    return httpx.post(f"{shard.url}/search", json=body, timeout=30)


def top_k(body: dict[str, Any]) -> list[list[int]]:
    shape = (body["nq"], body["width"])
    ids = decode_array(body["ids_b64"], "<i8", shape)
    exact = decode_array(body["exact_b64"], "<f4", shape)
    out = []
    for row_ids, row_exact in zip(ids, exact, strict=True):
        valid = row_ids >= 0
        order = np.lexsort((row_ids[valid], -row_exact[valid]))[:K]
        out.append([int(i) for i in row_ids[valid][order]])
    return out


def metric(shard: Service, path: str) -> float:
    text = httpx.get(f"{shard.url}/metrics", timeout=10).text
    series = f'simsearch_shard_filtered_searches_total{{path="{path}"}}'
    found = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


@pytest.mark.parametrize(("exact_max", "path"), [(20_000, "exact"), (0, "ivf")])
def test_filtered_search_answers_only_matching_ids(
    exact_max: int,
    path: str,
    published: tuple[str, Manifest],
    s3_endpoint: str,
    tmp_path: Path,
) -> None:
    store, manifest = published
    with start_service("shard", env(store, s3_endpoint, tmp_path / "cache", exact_max)) as shard:
        (version,) = httpx.get(f"{shard.url}/info", timeout=10).json()["versions"]
        assert version["metadata"] == SCHEMA and version["ready"] == list(range(P))
        cached = list((tmp_path / "cache" / "default").rglob("metadata.arrow"))
        stamped = list((tmp_path / "cache" / ".stamps").rglob("metadata.arrow"))
        assert len(cached) == len(stamped) == P  # fetched and verified with the rest

        labels = ("roses", "tulips")
        node = {"and": [{"field": "label", "in": labels}, {"field": "size", "range": {"lt": 2500}}]}
        wanted = {i for i, row in ROWS.items() if row["label"] in labels and row["size"] < 2500}
        q = unit(12, 1)
        answer = search(shard, manifest.version, q, node)
        assert answer.status_code == 200, answer.text
        got = top_k(answer.json())
        assert all(set(row) <= wanted for row in got)
        row_of = {p: i for i, p in enumerate(PATHS)}
        paths = [p for row in answer.json()["paths"] for p in row if p]
        assert paths and all(int(IDS[row_of[p]]) in wanted for p in paths)
        truth = filtered_truth(q, IDS, VECTORS, np.isin(IDS, list(wanted)), K)
        hits = sum(len(set(a) & set(b)) for a, b in zip(got, truth, strict=True))
        assert hits / (K * len(q)) >= 0.95
        assert metric(shard, path) == 1

        in_2024 = search(shard, manifest.version, q[:2], {"field": "key", "prefix": "photos/2024/"})
        assert in_2024.status_code == 200
        found = [i for row in top_k(in_2024.json()) for i in row]
        assert len(found) == 2 * K and all(ROWS[i]["key"].startswith("photos/2024/") for i in found)

        too_many = {"or": [{"field": "size", "eq": i} for i in range(70)]}
        refused = [
            ({"field": "colour", "eq": "red"}, 400, "invalid_filter", "colour"),
            ({"field": "size", "eq": "big"}, 400, "invalid_filter", "int"),
            (too_many, 400, "filter_too_large", "64"),
            ({"field": "size", "gt": 3}, 422, "validation_error", "filter"),
        ]
        for bad, status, code, words in refused:
            response = search(shard, manifest.version, q[:1], bad)
            error = response.json()
            assert (response.status_code, error["error"]) == (status, code), error
            assert words in error["detail"], error
