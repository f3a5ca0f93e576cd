"""Congruence: the sharded search answers exactly what one in-process FAISS index answers.

The same template, the same vectors and the same search parameters, searched (a) as one
monolithic index with exact re-ranking and (b) split into partitions, spread over N shards
by the placement, searched shard by shard and merged: the top-10 ids must agree
(ties tolerated the way faiss.contrib.evaluation.check_ref_knn_with_draws tolerates them).
"""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest
from faiss.contrib.evaluation import check_ref_knn_with_draws

from simsearch.common.ann import Template, candidates, to_fast_scan
from simsearch.common.features import open_features, write_features
from simsearch.common.ids import key_id
from simsearch.common.manifest import IndexParams
from simsearch.common.placement import assign_partitions, assignment
from simsearch.common.topk import merge
from simsearch.indexer.faissbuild import (
    choose_params,
    fill_partition,
    train_template,
    write_partition,
)
from simsearch.shard.searcher import Searcher, load_partition, load_template

P = 16
K = 10


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    """Unit vectors around 50 centres: structure like real embeddings, not uniform noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((50, dim)).astype(np.float32)
    x = centres[rng.integers(0, 50, n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def build(
    tmp: Path, vectors: np.ndarray, kind: str, nlist: int | None, pq_m: int | None
) -> tuple[IndexParams, Template, np.ndarray, np.ndarray]:
    """Partitions as the writer makes them; returns the plan, template, ids and the stored
    (scoring-space) vectors."""
    n, dim = vectors.shape
    ids = np.array([key_id(f"photos/{i:06d}.jpg") for i in range(n)], dtype=np.int64)
    plan = choose_params(n, dim, nlist=nlist, pq_m=pq_m, kind=kind, pca_dim=32)
    template = train_template(vectors[: plan.train_size], plan)
    faiss.write_index(template.root, str(tmp / "trained.faiss"))
    dtype = "float16" if plan.pca_dim else "float32"
    stored = template.project(vectors).astype(dtype)
    for p in range(P):
        sel = ids % P == p
        y = stored[sel].astype(np.float32)
        write_partition(template, fill_partition(template, ids[sel], y), tmp / f"{p}.faiss")
        paths = [f"photos/{i:06d}.jpg" for i in np.flatnonzero(sel)]
        write_features(tmp / f"{p}.h5", ids[sel], stored[sel], paths, dtype)
    return plan, template, ids, stored.astype(np.float32)


def reference(
    template: Template,
    ids: np.ndarray,
    vectors: np.ndarray,
    queries: np.ndarray,
    nprobe: int,
    refine: int,
) -> tuple[np.ndarray, np.ndarray]:
    """ONE in-process index over the stored vectors: search k·refine by the codes, re-rank
    exactly, keep k (queries projected into the scoring space first)."""
    mono = fill_partition(template, ids, vectors)
    if template.fast_scan:
        mono = to_fast_scan(mono)
    queries = template.project(queries)
    coarse_d, coarse_i = template.coarse(queries, nprobe)
    _, cand = candidates(mono, queries, K * refine, coarse_i, coarse_d)
    row_of = {int(i): r for r, i in enumerate(ids)}
    exact = np.array(
        [[queries[q] @ vectors[row_of[int(c)]] for c in row] for q, row in enumerate(cand)],
        dtype=np.float32,
    )
    best = np.argsort(-exact, axis=1, kind="stable")[:, :K]
    rows = np.arange(len(queries))[:, None]
    return exact[rows, best], cand[rows, best]


def distributed(
    tmp: Path, queries: np.ndarray, shards: int, nprobe: int, refine: int
) -> tuple[np.ndarray, np.ndarray]:
    """Scores and ids as the cluster answers: partitions spread over `shards`, each shard
    searching its planned share, the parts merged."""
    version = load_template(tmp / "trained.faiss")
    held = assignment(P, shards)
    searchers = {
        s: Searcher(
            version,
            {p: load_partition(p, tmp / f"{p}.faiss", tmp / f"{p}.h5", version) for p in parts},
            P,
        )
        for s, parts in held.items()
    }
    plan, uncovered = assign_partitions(range(P), held)
    assert uncovered == []
    parts = [searchers[s].search(queries, K, wanted, nprobe, refine) for s, wanted in plan.items()]
    ids, scores = merge(parts, K, K * refine)
    return scores, ids


@pytest.mark.parametrize(
    ("kind", "nlist", "pq_m", "n"),
    [
        ("fastscan", 128, None, 20_000),
        ("pq8", 128, 16, 20_000),
        ("auto", None, None, 6_000),
    ],
    ids=["pca-fastscan-20k", "ivf-pq8-20k", "exact-flat-6k"],
)
def test_sharded_top10_equals_one_in_process_index(
    tmp_path: Path, kind: str, nlist: int | None, pq_m: int | None, n: int
) -> None:
    vectors = clustered(n, 64, seed=1)
    queries = clustered(200, 64, seed=2)
    plan, template, ids, stored = build(tmp_path, vectors, kind, nlist, pq_m)
    assert (plan.pca_dim is not None) == (kind == "fastscan")
    ref_d, ref_i = reference(template, ids, stored, queries, plan.nprobe, plan.refine)
    for shards in (1, 2, 3):
        new_d, new_i = distributed(tmp_path, queries, shards, plan.nprobe, plan.refine)
        check_ref_knn_with_draws(ref_d, ref_i, new_d, new_i)  # raises on any difference
    if plan.factory.endswith("Flat"):  # exact plan: equal to brute force as well
        truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :K]
        assert (ids[truth] == new_i).mean() > 0.999


def test_features_round_trip_and_memory_map(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((50, 8)).astype(np.float32)
    ids = rng.integers(0, 2**62, 50)
    path = tmp_path / "features.h5"
    write_features(path, ids, vectors, [f"a/{i}.jpg" for i in range(50)], dtype="float16")
    loaded = open_features(path)
    assert isinstance(loaded.vectors, np.memmap)
    assert np.allclose(loaded.vectors, vectors.astype(np.float16))
    assert list(loaded.rows_of(ids[[7, 3]])) == [7, 3]
    assert loaded.paths(np.array([7])) == ["a/7.jpg"]
    import h5py

    with h5py.File(path) as h5:  # the old service's schema is still there
        assert set(h5) >= {"features", "paths"}
        assert h5["features"].chunks is None
