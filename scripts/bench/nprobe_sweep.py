"""Recall@10 and latency against nprobe on the photo-like index `search_bench.py` built.

    python scripts/bench/nprobe_sweep.py --workdir /tmp/sb1mp --n 1000000 \
        --out docs/bench/nprobe_1m.json

Reads the monolithic index `search_bench.py --data photo-like` left in the workdir (same
template, same vectors), draws the same vectors and queries again (seeded), and for each
nprobe measures recall@10 after the exact re-rank of 10·k candidates and the latency of
one query at a time with one FAISS thread.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recall_curve import PhotoLike, real_embeddings  # a sibling script

from simsearch.common.ids import key_ids

K = 10


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[128, 256, 512, 1024])
    parser.add_argument("--refine", type=int, default=10)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    gen = PhotoLike(real_embeddings(args.workdir / "real.npy"), centres=20_000, within=0.35)
    x, q = gen.draw(args.n, seed=1), gen.draw(args.queries, seed=2)
    flat = faiss.IndexFlatIP(x.shape[1])
    flat.add(x)
    truth = flat.search(q, K)[1]
    del flat
    ids = key_ids([f"synthetic/{i:08d}.jpg" for i in range(args.n)])  # search_bench's keys
    order = np.argsort(ids)
    sorted_ids = ids[order]
    mono = faiss.read_index(str(sorted(args.workdir.glob("mono-*.faiss"))[-1]))
    ivf = faiss.extract_index_ivf(mono)
    faiss.omp_set_num_threads(1)
    runs = []
    for nprobe in args.nprobe:
        ivf.nprobe = nprobe
        hits = []
        started = time.perf_counter()
        for row, query in enumerate(q):
            _, cand = mono.search(query[None], K * args.refine)
            rows = order[np.searchsorted(sorted_ids, cand[0][cand[0] >= 0])]
            best = rows[np.argsort(-(x[rows] @ query))[:K]]
            hits.append(len(set(best.tolist()) & set(truth[row].tolist())) / K)
        ms = (time.perf_counter() - started) * 1000 / len(q)
        runs.append({"nprobe": nprobe, "recall": float(np.mean(hits)), "ms": round(ms, 2)})
        print(json.dumps(runs[-1]), flush=True)
    if args.out:
        args.out.write_text(
            json.dumps({"n": args.n, "refine": args.refine, "runs": runs}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
