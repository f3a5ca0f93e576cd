"""Compare two sets of `search_bench.py` runs (A/B, interleaved on one machine).

    python scripts/bench/ab_compare.py --before /tmp/ab_before_*.json \
        --after /tmp/ab_after_*.json --out docs/bench/arch_ab_100k.json

On a shared 2-core machine a figure moves by ±30 % between runs, and so does the speed of
code that did not change. So next to the raw medians this prints each figure relative to
something measured in the same run with the same code on both sides: latency over the
in-process FAISS baseline's, and a server's CPU per query over the benchmark client's (the
client's code and the bytes it parses are identical in A and B, so its CPU per query
moves only with the machine).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

Run = dict[str, Any]

FIGURES: dict[str, Callable[[Run], float]] = {
    "p50_ms": lambda r: r["p50_ms"],
    "p99_ms": lambda r: r["p99_ms"],
    "qps_c8": lambda r: r["qps_c8"],
    "baseline_p50_ms": lambda r: r["baseline"]["p50_ms"],
    "baseline_qps_threads": lambda r: r["baseline"]["qps_threads"],
    "shard_took_p50_ms": lambda r: r["shard_0_direct"]["took_p50_ms"],
    "router_cpu_ms_c8": lambda r: r["cpu_ms_per_query_c8"]["router"],
    "shard0_cpu_ms_c8": lambda r: r["cpu_ms_per_query_c8"]["shard-0"],
    "client_cpu_ms_c8": lambda r: r["cpu_ms_per_query_c8"]["client"],
    "recall_at_10": lambda r: r["recall_at_10_cluster"],
    "congruence_mismatches": lambda r: r["congruence_mismatched_queries"],
    # relative to the same run's figures of code identical on both sides
    "p50_over_baseline_p50": lambda r: r["p50_ms"] / r["baseline"]["p50_ms"],
    "qps_c8_over_baseline": lambda r: r["qps_c8_over_baseline"],
    "router_cpu_over_client_cpu_c8": lambda r: (
        r["cpu_ms_per_query_c8"]["router"] / r["cpu_ms_per_query_c8"]["client"]
    ),
    "shard0_cpu_over_client_cpu_c8": lambda r: (
        r["cpu_ms_per_query_c8"]["shard-0"] / r["cpu_ms_per_query_c8"]["client"]
    ),
}


def summarise(before: list[Run], after: list[Run]) -> dict[str, dict[str, Any]]:
    """Per figure: every run's value, both medians and after/before."""
    out: dict[str, dict[str, Any]] = {}
    for name, figure in FIGURES.items():
        b = [figure(r) for r in before]
        a = [figure(r) for r in after]
        mb, ma = statistics.median(b), statistics.median(a)
        out[name] = {
            "before": [round(v, 4) for v in b],
            "after": [round(v, 4) for v in a],
            "median_before": round(mb, 4),
            "median_after": round(ma, 4),
            "after_over_before": round(ma / mb, 3) if mb else None,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", nargs="+", type=Path, required=True)
    parser.add_argument("--after", nargs="+", type=Path, required=True)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    before = [json.loads(p.read_text()) for p in args.before]
    after = [json.loads(p.read_text()) for p in args.after]
    summary = summarise(before, after)
    for name, row in summary.items():
        print(
            f"{name:32s} before {row['median_before']:10.4f}  after {row['median_after']:10.4f}"
            f"  after/before {row['after_over_before']}"
        )
    if args.out:
        doc = {"command": before[0].get("command"), "runs": len(before), "figures": summary}
        args.out.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
