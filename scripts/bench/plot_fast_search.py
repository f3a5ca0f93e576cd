"""Plot the fast-search runs: cost growth with n, and the build-time recall probe's curve.

    python scripts/bench/plot_fast_search.py docs/bench/fast_100k.json docs/bench/fast_1m.json \
        --out docs/img/fast_search.png

Each input is a `search_bench.py --out` JSON. Left: p50/p99 through the router and the
in-process p50 against n. Middle: QPS at concurrency 8 (router) and the in-process
2-thread QPS. Then a shard's anonymous and file-backed memory after the queries. Right:
recall@10 against nprobe from each run's recall probe.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def load(paths: list[Path]) -> list[dict[str, Any]]:
    runs = [json.loads(p.read_text()) for p in paths]
    return sorted(runs, key=lambda r: r["n"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    runs = load(args.runs)
    n = [r["n"] for r in runs]
    fig, (lat, qps, mem, rec) = plt.subplots(1, 4, figsize=(19, 4.2))
    lat.plot(n, [r["p50_ms"] for r in runs], "o-", label="router p50 (c=1)")
    lat.plot(n, [r["p99_ms"] for r in runs], "o--", label="router p99 (c=1)")
    lat.plot(n, [r["baseline"]["p50_ms"] for r in runs], "s-", label="in-process p50")
    lat.axhline(3, color="grey", lw=0.8, ls=":", label="goal p50 3 ms")
    lat.set(xscale="log", xlabel="vectors", ylabel="ms", title="latency, k=10")
    lat.legend(fontsize=8)
    qps.plot(n, [r["qps_c8"] for r in runs], "o-", label="router, concurrency 8")
    qps.plot(n, [r["baseline"]["qps_threads"] for r in runs], "s-", label="in-process, 2 threads")
    qps.axhline(500, color="grey", lw=0.8, ls=":", label="goal 500")
    qps.set(xscale="log", xlabel="vectors", ylabel="queries/s", title="throughput")
    qps.legend(fontsize=8)
    per_shard = [r["shard_memory"][0] for r in runs]  # shard 0 (the others are alike)
    mem.plot(n, [m["anonymous_kb"] / 1024 for m in per_shard], "o-", label="anonymous")
    mem.plot(n, [m["file_backed_kb"] / 1024 for m in per_shard], "s-", label="file-backed")
    mem.set(xscale="log", xlabel="vectors", ylabel="MB", title="memory per shard (n/2 each)")
    mem.legend(fontsize=8)
    for r in runs:
        probe = r.get("probe") or {}
        curve = {int(k): v for k, v in (probe.get("curve") or {}).items()}
        if curve:
            xs = sorted(curve)
            rec.plot(xs, [curve[x] for x in xs], "o-", ms=3, label=f"n={r['n']:,}")
    rec.axhline(0.95, color="grey", lw=0.8, ls=":", label="target 0.95")
    rec.set(xscale="log", xlabel="nprobe", ylabel="recall@10", title="build-time recall probe")
    rec.legend(fontsize=8)
    fig.suptitle("simsearch fast-scan plan (PCA256, IVF, PQ256x4, re-rank 10·k), 2 shards")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(args.out)


if __name__ == "__main__":
    main()
