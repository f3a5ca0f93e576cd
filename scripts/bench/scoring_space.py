"""Ranking quality by scoring space: raw cosine vs cosine after a PCA learned on the set.

    python scripts/bench/scoring_space.py --embeddings /tmp/sb1m/real.npy \
        --out docs/bench/scoring_space.json

The fast-scan plan scores in a PCA space learned at index time from the indexed vectors
(centred, not whitened, unit length again after the projection), stored as float16. This
measures what that does to retrieval on the labelled photo sets at hand, exact search,
every photo a query (leave-one-out, as `quality.py`): P@10, mAP and mAP@50 for raw
cosine and PCA to 64/128/256 dimensions, float32 and float16.

`--embeddings` is the cache `recall_curve.real_embeddings` writes (Lite0 vectors of the
bundled flowers, then Corel-1k, in `labels.csv` order); without it the photos are
embedded here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # a sibling script
from recall_curve import DATASETS, real_embeddings


def pca_space(x: np.ndarray, dim: int) -> np.ndarray:
    """Centred projection on the top `dim` components of `x` itself, unit rows."""
    mean = x.mean(0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    y = (x - mean) @ vt[:dim].T
    out: np.ndarray = y / np.linalg.norm(y, axis=1, keepdims=True)
    return out.astype(np.float32)


def map_at(vectors: np.ndarray, labels: list[str], k: int) -> float:
    """Mean over queries of AP over the first k results (relevant = same label)."""
    rel = quality.relevance_matrix(vectors, labels)[:, :k]
    hits = np.cumsum(rel, axis=1)
    ranks = np.arange(1, k + 1)
    found = hits[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = np.sum(rel * (hits / ranks), axis=1) / found
    return float(np.mean(np.where(found > 0, ap, 0.0)))


def scores(vectors: np.ndarray, labels: list[str]) -> dict[str, float]:
    metrics = quality.leave_one_out_metrics(vectors, labels)
    return {
        "p@10": round(metrics["p@10"], 4),
        "mAP": round(metrics["mAP"], 4),
        "mAP@50": round(map_at(vectors, labels, 50), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embeddings", type=Path, default=Path("/tmp/real.npy"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    x = real_embeddings(args.embeddings)
    results: dict[str, Any] = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}
    start = 0
    for root in DATASETS:
        if not (root / "labels.csv").exists():
            continue
        dataset = quality.load_dataset(root)
        n = len(dataset.labels)
        part, labels = x[start : start + n], list(dataset.labels)
        start += n
        rows: dict[str, dict[str, float]] = {"raw cosine (float32)": scores(part, labels)}
        for dim in (64, 128, 256):
            y = pca_space(part, min(dim, n - 1))
            rows[f"PCA{dim} (float32)"] = scores(y, labels)
            y16 = y.astype(np.float16).astype(np.float32)
            rows[f"PCA{dim} (float16, stored)"] = scores(y16, labels)
        results[root.name] = {"n": n, "classes": len(set(labels)), "results": rows}
        print(root.name)
        for name, figures in rows.items():
            print(f"  {name:26s} {figures}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
