"""Filtered search on the shard: the selection, both paths, the checks, the selector in FAISS.

A few thousand clustered vectors in a fast-scan IVF index (and an exact-plan one), with
metadata tables written by `build_table`: every returned id must satisfy the filter (the
reference evaluator `filters.matches` over its row), and recall@10 against brute force
over the matching rows must be ≥ 0.95 at selectivities 50 / 10 / 1 / 0.1 %, on the exact
path (threshold high) and on the IVF path (threshold 0).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from pydantic import TypeAdapter

from simsearch.common.ann import candidates, to_fast_scan
from simsearch.common.errors import FilterTooLarge, InvalidFilter
from simsearch.common.filters import Filter, matches
from simsearch.common.layout import IndexLayout
from simsearch.common.manifest import IndexParams, Manifest, ModelInfo
from simsearch.common.metadata import FieldType
from simsearch.common.storage import FileStore
from simsearch.common.topk import Candidates
from simsearch.common.wire import ShardCandidates, ShardSearchRequest, decode_array, encode_array
from simsearch.indexer.writer import write_index
from simsearch.shard.app import build_service
from simsearch.shard.execute import execute
from simsearch.shard.filtered import EXACT_PATH, IVF_PATH, Selection, scaled_nprobe
from simsearch.shard.metrics import ShardMetrics
from simsearch.shard.query import prepare
from simsearch.shard.service import ShardService
from simsearch.shard.settings import ShardSettings
from tests.support.metaindex import add_metadata, filtered_truth

P = 4
N = 4000
DIM = 32
K = 10
NLIST = 64
NPROBE = 8
LABELS = [f"label{i}" for i in range(10)]
SCHEMA: dict[str, FieldType] = {
    "key": "string",
    "label": "string",
    "rank": "int",
    "score": "float",
    "flag": "bool",
    "mtime": "time",
}
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
FILTER: TypeAdapter[Filter] = TypeAdapter(Filter)


def clustered(rows: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, DIM)).astype(np.float32)
    x = centres[rng.integers(0, 40, rows)] + 0.6 * rng.standard_normal((rows, DIM))
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


IDS = np.arange(N, dtype=np.int64) * 7919 + 11
VECTORS = clustered(N, 0)
PATHS = [f"photos/{i % 4}/img{i}.jpg" for i in range(N)]
RANK = np.random.default_rng(1).permutation(N)  # rank < s·N selects exactly s of the rows
ROWS: dict[int, dict[str, Any]] = {
    int(IDS[i]): {
        "key": PATHS[i],
        "label": LABELS[i % 10],
        "rank": int(RANK[i]),
        "score": float(i % 100) / 10,
        "flag": i % 3 == 0,
        "mtime": EPOCH + timedelta(hours=i),
        **({} if i % 7 else {"label": None}),  # some rows without a label
    }
    for i in range(N)
}


def flt(data: dict[str, Any]) -> Filter:
    return FILTER.validate_python(data)


def queries(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = VECTORS[rng.integers(0, N, n)] + 0.3 * rng.standard_normal((n, DIM)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def publish(root: Path, params: IndexParams | None) -> Manifest:
    layout = IndexLayout(FileStore(root))
    model = ModelInfo(name="test", dim=DIM)
    base = write_index(
        layout, IDS, VECTORS, PATHS, model, partitions=P, params=params, probe_recall=False
    )
    return add_metadata(layout, base, ROWS, SCHEMA)


FASTSCAN = IndexParams(
    factory=f"IVF{NLIST},PQ{DIM}x4",
    nlist=NLIST,
    pq_m=DIM,
    nbits=4,
    nprobe=NPROBE,
    refine=10,
    train_size=N,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    root = tmp_path_factory.mktemp("store")
    return root, publish(root, FASTSCAN)


def make_shard(root: Path, cache: Path, exact_max: int) -> ShardService:
    settings = ShardSettings(
        store=str(root), shard_ordinal=0, replicas=1, cache_dir=cache, filter_exact_max=exact_max
    )
    service = build_service(settings, ShardMetrics(CollectorRegistry()))
    service.poller.poll_once()
    return service


@pytest.fixture(scope="module")
def ivf_shard(store: tuple[Path, Manifest], tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_shard(store[0], tmp_path_factory.mktemp("cache-ivf"), exact_max=0)


@pytest.fixture(scope="module")
def exact_shard(store: tuple[Path, Manifest], tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_shard(store[0], tmp_path_factory.mktemp("cache-exact"), exact_max=N)


def shard_request(version: str, q: np.ndarray, node: dict[str, Any] | None, **extra: Any) -> Any:
    return ShardSearchRequest.model_validate(
        {
            "version": version,
            "partitions": list(range(P)),
            "k": K,
            "dim": DIM,
            "nq": len(q),
            "vectors_b64": encode_array(q, "<f4"),
            "filter": node,
            **extra,
        }
    )


def search(service: ShardService, req: ShardSearchRequest) -> Candidates:
    answer: ShardCandidates = execute(
        prepare(req, service.holdings, service.settings), service.metrics
    )
    shape = (answer.nq, answer.width)
    return Candidates(
        decode_array(answer.ids_b64, "<i8", shape),
        decode_array(answer.approx_b64, "<f4", shape),
        decode_array(answer.exact_b64, "<f4", shape),
    )


def top_k(found: Candidates) -> list[list[int]]:
    """The merged top k of one shard's candidates: by exact score, ties by id."""
    out = []
    for ids, exact in zip(found.ids, found.exact, strict=True):
        valid = ids >= 0
        order = np.lexsort((ids[valid], -exact[valid]))[:K]
        out.append([int(i) for i in ids[valid][order]])
    return out


def selected_mask(node: Filter) -> np.ndarray:
    return np.array([matches(node, ROWS[int(i)], SCHEMA) for i in IDS], dtype=bool)


def recall(found: list[list[int]], truth: list[list[int]]) -> float:
    hits = sum(len(set(f) & set(t)) for f, t in zip(found, truth, strict=True))
    return hits / max(1, sum(len(t) for t in truth))


def path_count(service: ShardService, path: str) -> float:
    value = service.metrics.registry.get_sample_value(
        "simsearch_shard_filtered_searches_total", {"path": path}
    )
    return value or 0.0


# ------------------------------------------------------------ FAISS honours the selector


@pytest.fixture(scope="module")
def pq4() -> tuple[Any, Any, Any]:
    """A 4-bit PQ IVF index over every vector, and one over the selected tenth only."""
    quantizer = faiss.IndexFlatIP(DIM)
    ivf: Any = faiss.IndexIVFPQ(quantizer, DIM, NLIST, DIM, 4, faiss.METRIC_INNER_PRODUCT)
    ivf.by_residual = False
    ivf.train(VECTORS)
    only: Any = faiss.clone_index(ivf)
    ivf.add_with_ids(VECTORS, IDS)
    only.add_with_ids(VECTORS[RANK < N // 10], IDS[RANK < N // 10])
    return quantizer, ivf, only


@pytest.mark.parametrize("implem", [None, 0, 10, 12, 13, 14, 15])
def test_faiss_fast_scan_honours_the_id_selector(
    implem: int | None, pq4: tuple[Any, Any, Any]
) -> None:
    """The reason the IVF path can pass `params.sel`: FAISS 1.15.1's fast-scan kernels
    (every implementation) and the plain PQ4 scan return only selected ids, and the same
    candidates as an index holding only the selected vectors."""
    quantizer, ivf, only = pq4
    keep = np.ascontiguousarray(IDS[RANK < N // 10])
    index, subset = (ivf, only) if implem is None else (to_fast_scan(ivf), to_fast_scan(only))
    if implem is not None:
        index.implem = subset.implem = implem
    q = queries(16, 5)
    coarse_d, coarse_i = quantizer.search(q, 16)
    selector = faiss.IDSelectorBatch(len(keep), faiss.swig_ptr(keep))
    dist, ids = candidates(index, q, 50, coarse_i, coarse_d, selector)
    assert np.isin(ids[ids >= 0], keep).all() and (ids >= 0).sum() > 16 * 40
    want_dist, want_ids = candidates(subset, q, 50, coarse_i, coarse_d)
    assert np.array_equal(ids, want_ids) and np.allclose(dist, want_dist)


def test_stacked_flat_lists_honour_the_id_selector() -> None:
    """The HStackInvertedLists path (exact and 8-bit plans) applies the selector too."""
    quantizer = faiss.IndexFlatIP(DIM)
    parts = []
    for p in range(2):
        part: Any = faiss.IndexIVFFlat(quantizer, DIM, 8, faiss.METRIC_INNER_PRODUCT)
        if p == 0:
            part.train(VECTORS)
        part.is_trained = True
        part.add_with_ids(VECTORS[p::2], IDS[p::2])
        parts.append(part)
    lists: Any = faiss.InvertedListsPtrVector()  # type: ignore[attr-defined]
    for part in parts:
        lists.push_back(part.invlists)
    stacked = faiss.HStackInvertedLists(lists.size(), lists.data())
    combo: Any = faiss.IndexIVFFlat(quantizer, DIM, 8, faiss.METRIC_INNER_PRODUCT)
    combo.is_trained = True
    combo.replace_invlists(stacked, False)
    combo.ntotal = N
    keep = np.ascontiguousarray(IDS[RANK < 40])
    q = queries(8, 6)
    coarse_d, coarse_i = quantizer.search(q, 8)  # every list: an exact scan
    selector = faiss.IDSelectorBatch(len(keep), faiss.swig_ptr(keep))
    _, ids = candidates(combo, q, 10, coarse_i, coarse_d, selector)
    mask = RANK < 40
    assert [list(map(int, row)) for row in ids] == filtered_truth(q, IDS, VECTORS, mask, 10)


# ------------------------------------------------------------ both paths


@pytest.mark.parametrize("fraction", [0.5, 0.1, 0.01, 0.001])
@pytest.mark.parametrize("which", ["exact", "ivf"])
def test_recall_at_selectivities(
    fraction: float, which: str, store: tuple[Path, Manifest], request: pytest.FixtureRequest
) -> None:
    service: ShardService = request.getfixturevalue(f"{which}_shard")
    node = flt({"field": "rank", "range": {"lt": int(N * fraction)}})
    mask = selected_mask(node)
    assert mask.sum() == int(N * fraction)
    q = queries(40, 7)
    before = path_count(service, which)
    found = search(service, shard_request(store[1].version, q, node.model_dump(), nprobe=NPROBE))
    assert path_count(service, which) == before + 1
    returned = found.ids[found.ids >= 0]
    assert all(matches(node, ROWS[int(i)], SCHEMA) for i in returned)
    truth = filtered_truth(q, IDS, VECTORS, mask, K)
    got = top_k(found)
    assert recall(got, truth) >= 0.95
    if which == "exact":  # exact: the very answer, approx = exact
        assert got == truth
        assert np.array_equal(found.approx, found.exact)


@pytest.mark.parametrize(
    "node",
    [
        {"field": "label", "eq": "label3"},
        {"field": "label", "in": ["label1", "label2"]},
        {"field": "key", "prefix": "photos/2/"},
        {"not": {"field": "label", "eq": "label3"}},
        {"and": [{"field": "flag", "eq": True}, {"field": "score", "range": {"gte": 5}}]},
        {"or": [{"field": "label", "eq": "label0"}, {"field": "rank", "range": {"lt": 100}}]},
        {"field": "mtime", "range": {"gte": "2024-02-01T00:00:00Z", "lt": "2024-03-01"}},
    ],
)
def test_every_operator_on_both_paths(
    node: dict[str, Any], store: tuple[Path, Manifest], ivf_shard: Any, exact_shard: Any
) -> None:
    checked = flt(node)
    mask = selected_mask(checked)
    assert 0 < mask.sum() < N
    q = queries(20, 8)
    truth = filtered_truth(q, IDS, VECTORS, mask, K)
    for service in (ivf_shard, exact_shard):
        found = search(service, shard_request(store[1].version, q, node, nprobe=NPROBE))
        returned = found.ids[found.ids >= 0]
        assert all(matches(checked, ROWS[int(i)], SCHEMA) for i in returned)
        assert recall(top_k(found), truth) >= 0.95
    assert top_k(search(exact_shard, shard_request(store[1].version, q, node))) == truth


def test_nothing_selected_answers_empty_slots(
    store: tuple[Path, Manifest], ivf_shard: Any, exact_shard: Any
) -> None:
    node = {"field": "label", "eq": "no such label"}
    for service in (ivf_shard, exact_shard):
        found = search(service, shard_request(store[1].version, queries(3, 9), node))
        assert found.ids.shape == (3, K * 10) and (found.ids == -1).all()


def test_fewer_selected_than_candidates(store: tuple[Path, Manifest], exact_shard: Any) -> None:
    node = flt({"field": "rank", "range": {"lt": 7}})  # 7 rows < k·refine = 100
    q = queries(4, 10)
    found = search(exact_shard, shard_request(store[1].version, q, node.model_dump()))
    assert ((found.ids >= 0).sum(axis=1) == 7).all()
    assert top_k(found) == filtered_truth(q, IDS, VECTORS, selected_mask(node), K)


def test_without_a_filter_the_answer_is_unchanged(
    store: tuple[Path, Manifest], ivf_shard: Any
) -> None:
    q = queries(5, 11)
    plain = search(ivf_shard, shard_request(store[1].version, q, None, nprobe=NPROBE))
    everything = {"field": "rank", "range": {"gte": 0}}  # selects all: the plain IVF scan
    full = search(ivf_shard, shard_request(store[1].version, q, everything, nprobe=NPROBE))
    assert np.array_equal(plain.ids, full.ids) and np.array_equal(plain.exact, full.exact)


def test_selections_are_cached_per_filter(store: tuple[Path, Manifest], ivf_shard: Any) -> None:
    view = ivf_shard.holdings.view(store[1].version)
    node = flt({"field": "label", "eq": "label5"})
    made: list[int] = []

    def make() -> Selection:
        made.append(1)
        return Selection(1, 1, EXACT_PATH)

    key = ((0,), node.model_dump_json(), 0)
    first = view.index.selection(key, make)
    assert view.index.selection(key, make) is first and made == [1]


def test_scaled_nprobe() -> None:
    def sel(count: int, total: int) -> Selection:
        return Selection(count, total, IVF_PATH)

    assert scaled_nprobe(8, sel(500, 1000), 64) == 16
    assert scaled_nprobe(8, sel(300, 1000), 64) == 27  # ceil(8 / 0.3)
    assert scaled_nprobe(8, sel(10, 1000), 64) == 64  # capped at nlist
    assert scaled_nprobe(8, sel(1000, 1000), 64) == 8
    assert scaled_nprobe(8, sel(0, 1000), 64) == 8


def test_the_ivf_path_scans_more_lists_for_a_rarer_filter(
    store: tuple[Path, Manifest], ivf_shard: Any
) -> None:
    """At 1 % with nprobe 8 of 64 the scaled nprobe is every list: recall is exact's."""
    node = flt({"field": "rank", "range": {"lt": N // 100}})
    q = queries(30, 12)
    found = search(ivf_shard, shard_request(store[1].version, q, node.model_dump(), nprobe=1))
    truth = filtered_truth(q, IDS, VECTORS, selected_mask(node), K)
    assert recall(top_k(found), truth) >= 0.95


# ------------------------------------------------------------ checks and loading


def test_bad_filters_are_refused_with_reasons(store: tuple[Path, Manifest], ivf_shard: Any) -> None:
    version, q = store[1].version, queries(1, 13)
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"field": "colour", "eq": "red"}, InvalidFilter, "unknown filter field 'colour'"),
        ({"field": "rank", "eq": "high"}, InvalidFilter, "type int"),
        ({"field": "label", "range": {"gt": 1}}, InvalidFilter, "numeric or time"),
        ({"or": [{"field": "rank", "eq": i} for i in range(80)]}, FilterTooLarge, "nodes"),
    ]
    for node, error, words in cases:
        with pytest.raises(error, match=words):
            search(ivf_shard, shard_request(version, q, node))


def test_a_version_without_metadata_refuses_any_filter(tmp_path: Path) -> None:
    layout = IndexLayout(FileStore(tmp_path / "store"))
    manifest = write_index(
        layout, IDS[:500], VECTORS[:500], PATHS[:500], ModelInfo(name="t", dim=DIM), partitions=P
    )
    service = make_shard(tmp_path / "store", tmp_path / "cache", exact_max=100)
    assert service.info().versions[0].metadata is None
    req = shard_request(manifest.version, queries(1, 14), {"field": "key", "prefix": "photos/"})
    with pytest.raises(InvalidFilter, match="no metadata"):
        search(service, req)


def test_tables_are_loaded_kept_in_the_cache_and_reported(
    store: tuple[Path, Manifest], ivf_shard: Any
) -> None:
    view = ivf_shard.holdings.view(store[1].version)
    for number, served in view.ready.items():
        table = served.partition.table
        assert table is not None and table.num_rows == served.info.count
        assert served.info.metadata is not None
        assert ivf_shard.holdings.cache.path_of(served.info.metadata).is_file()  # not swept
        assert served.info.metadata in served.refs()
        assert number == served.number
    (info,) = ivf_shard.info().versions
    assert info.metadata == SCHEMA


def test_exact_plan_index_filters_exactly(tmp_path: Path) -> None:
    """The exact plan (`IVF1,Flat`, stacked flat lists) on the IVF path: exact answers."""
    publish(tmp_path / "store", None)
    service = make_shard(tmp_path / "store", tmp_path / "cache", exact_max=0)
    version = service.holdings.live
    assert version is not None
    node = flt({"field": "label", "in": ["label4", "label7"]})
    q = queries(10, 15)
    found = search(service, shard_request(version, q, node.model_dump()))
    assert top_k(found) == filtered_truth(q, IDS, VECTORS, selected_mask(node), K)
    assert path_count(service, IVF_PATH) == 1
