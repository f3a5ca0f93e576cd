"""Recall@10 against latency for the IVF-PQ parameters, on photo-like vectors (issue #3).

    python scripts/bench/recall_curve.py --n 200000 --workdir /tmp/recall \
        --out docs/bench/recall_200k.json --plot docs/img/recall.png

Isotropic random vectors have no neighbour structure in 1280-d (every point is about as
far from a query as every other), so recall measured on them says nothing about photos.
Here the vectors follow the covariance spectrum of real embeddings instead:

1. EfficientNet-Lite0 embeddings (the default model, in this process) of the bundled
   flower photos and, when `../shared/datasets/corel1k-wang` exists, the Corel photos
   (cached in the workdir).
2. Their mean, top principal directions and variances, and the residual variance; then a
   Gaussian mixture in that spectrum: `--centres` centres (a "subject" each) with
   `--within` of the variance inside a centre. Unit length, like the real ones.
3. For each factory (the writer's `choose_params` form, `IVF<nlist>,PQ<m>`, with or
   without residual encoding) one index, then for every nprobe × refine: recall@10 of
   the top k·refine candidates re-ranked exactly (what a shard does) against exact
   search, and the single-query latency in this process with one FAISS thread.

The real features themselves (1,500 photos) are below the exact-scan threshold: the
indexer searches them exactly, recall 1.0 by construction (reported as such).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # a sibling script: its dataset loading and embedding

REPO = Path(__file__).resolve().parents[2]
DATASETS = [REPO / "samples" / "flowers", REPO.parent / "shared" / "datasets" / "corel1k-wang"]
K = 10


def real_embeddings(cache: Path) -> np.ndarray:
    """Unit EfficientNet-Lite0 vectors of the photos at hand (cached)."""
    if cache.exists():
        cached = np.load(cache).astype(np.float32)
        return cached / np.linalg.norm(cached, axis=1, keepdims=True)
    from simsearch.models.device import resolve_placement
    from simsearch.models.engine import Engine
    from simsearch.models.registry import get_spec, load_model

    spec = get_spec("efficientnet-lite0")
    module, weights = load_model(spec, None)
    engine = Engine(spec, module, resolve_placement("cpu", "fp32"), weights)
    out = []
    for root in DATASETS:
        if (root / "labels.csv").exists():
            images, _ = quality.decode_all(quality.load_dataset(root))
            out.append(quality.embed_all(engine, images))
    x = np.concatenate(out).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, x)
    return x


class PhotoLike:
    """A Gaussian mixture with the spectrum of real embeddings (see the module doc)."""

    def __init__(self, real: np.ndarray, centres: int, within: float, rank: int = 512) -> None:
        self.mean = real.mean(0)
        _, s, vt = np.linalg.svd(real - self.mean, full_matrices=False)
        variances = s**2 / (len(real) - 1)
        rank = min(rank, len(variances))
        self.components = vt[:rank].astype(np.float32)
        self.scale = np.sqrt(variances[:rank]).astype(np.float32)
        self.residual = float(np.sqrt(variances[rank:].sum() / real.shape[1]))
        self.within = within
        rng = np.random.default_rng(12345)
        spread = self.scale * np.sqrt(1 - within)
        self.centres = (rng.standard_normal((centres, rank)) * spread).astype(np.float32)

    def draw(self, n: int, seed: int, out: np.ndarray | None = None) -> np.ndarray:
        """`n` unit vectors (into `out` when given, e.g. a memory map for 3M × 1280-d)."""
        rng = np.random.default_rng(seed)
        dim = self.components.shape[1]
        out = np.empty((n, dim), np.float32) if out is None else out
        for start in range(0, n, 50_000):
            m = min(50_000, n - start)
            z = self.centres[rng.integers(0, len(self.centres), m)]
            z = z + rng.standard_normal(z.shape).astype(np.float32) * self.scale * np.sqrt(
                self.within
            )
            x = self.mean + z @ self.components
            x += rng.standard_normal((m, dim)).astype(np.float32) * self.residual
            out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out


def build(x: np.ndarray, factory: str, residual: bool, train: int) -> faiss.Index:
    """Train and fill one index with every core; searches are then timed on one."""
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    index = faiss.index_factory(x.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    faiss.extract_index_ivf(index).by_residual = residual
    sample = x[np.random.default_rng(0).choice(len(x), min(train, len(x)), replace=False)]
    index.train(sample)
    index.add(x)
    faiss.omp_set_num_threads(1)
    return index


def measure(
    index: faiss.Index, x: np.ndarray, q: np.ndarray, truth: np.ndarray, nprobe: int, refine: int
) -> dict[str, float]:
    """Recall@10 after the exact re-rank of k·refine candidates, and ms per single query."""
    ivf = faiss.extract_index_ivf(index)
    ivf.nprobe = nprobe
    hits = []
    started = time.perf_counter()
    for row, query in enumerate(q):
        _, cand = index.search(query[None], K * refine)
        c = cand[0][cand[0] >= 0]
        best = c[np.argsort(-(x[c] @ query))[:K]]
        hits.append(len(set(best.tolist()) & set(truth[row].tolist())) / K)
    ms = (time.perf_counter() - started) * 1000 / len(q)
    return {"nprobe": nprobe, "refine": refine, "recall": float(np.mean(hits)), "ms": ms}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--centres", type=int, default=20_000)
    parser.add_argument("--within", type=float, default=0.35)
    parser.add_argument("--nlist", type=int, help="default: the writer's choice for n")
    parser.add_argument("--pq", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--nprobe", type=int, nargs="+", default=[32, 64, 128, 256, 512])
    parser.add_argument("--refine", type=int, nargs="+", default=[10, 30])
    parser.add_argument("--residual", choices=["yes", "no", "both"], default="both")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)
    from simsearch.indexer.faissbuild import choose_params

    real = real_embeddings(args.workdir / "real.npy")
    gen = PhotoLike(real, args.centres, args.within)
    x, q = gen.draw(args.n, seed=1), gen.draw(args.queries, seed=2)
    flat = faiss.IndexFlatIP(x.shape[1])
    flat.add(x)
    sims, truth = flat.search(q, K)
    real_sims = faiss.IndexFlatIP(real.shape[1])
    real_sims.add(real)
    real_top = real_sims.search(real[:200], K + 1)[0]
    params = choose_params(args.n, x.shape[1])
    nlist = args.nlist or params.nlist or 1
    result: dict[str, Any] = {
        "n": args.n,
        "queries": args.queries,
        "real_photos": len(real),
        "neighbour_similarity": {
            "real_top1_top10": [float(real_top[:, 1].mean()), float(real_top[:, K].mean())],
            "generated_top1_top10": [float(sims[:, 0].mean()), float(sims[:, K - 1].mean())],
        },
        "runs": [],
    }
    residuals = {"yes": [True], "no": [False], "both": [True, False]}[args.residual]
    for m in args.pq:
        for residual in residuals:
            factory = f"IVF{nlist},PQ{m}"
            started = time.perf_counter()
            index = build(x, factory, residual, params.train_size or 262_144)
            built = time.perf_counter() - started
            for nprobe in args.nprobe:
                for refine in args.refine:
                    row = {"factory": factory, "residual": residual, "build_s": round(built, 1)}
                    row.update(measure(index, x, q, truth, nprobe, refine))
                    print(json.dumps(row), flush=True)
                    result["runs"].append(row)
            del index
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    if args.plot:
        plot(result, args.plot)
    return 0


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    series: dict[str, list[dict[str, Any]]] = {}
    for run in result["runs"]:
        name = f"{run['factory']}{'' if run['residual'] else ' no-residual'} refine {run['refine']}"
        series.setdefault(name, []).append(run)
    for name, runs in series.items():
        runs.sort(key=lambda r: r["nprobe"])
        ax.plot([r["ms"] for r in runs], [r["recall"] for r in runs], "o-", label=name)
        for r in runs:
            ax.annotate(str(r["nprobe"]), (r["ms"], r["recall"]), fontsize=7)
    ax.axhline(0.95, color="grey", linestyle="--")
    ax.set_xscale("log")
    ax.set_xlabel("ms per query (one FAISS thread, in-process; labels: nprobe)")
    ax.set_ylabel("recall@10 after exact re-rank")
    ax.set_title(f"Photo-like vectors, n = {result['n']:,}, 1280-d")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
