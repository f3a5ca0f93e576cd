"""Plot `filter_bench.py`'s figures: recall@10 and latency per filter selectivity.

python scripts/bench/plot_filters.py docs/bench/filters_100k.json docs/img/filters.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main() -> None:
    source, target = Path(sys.argv[1]), Path(sys.argv[2])
    figures = json.loads(source.read_text())["filters"]
    names = list(figures)
    rows = [figures[n] for n in names]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    xs = range(len(names))
    left.bar(
        [x - 0.2 for x in xs],
        [r["recall_at_10_scoring_space"] for r in rows],
        0.4,
        label="scoring space (what the index ranks by)",
    )
    left.bar(
        [x + 0.2 for x in xs],
        [r["recall_at_10_raw_space"] for r in rows],
        0.4,
        label="raw 1280-d space",
    )
    left.axhline(0.95, color="grey", linestyle="--", linewidth=1)
    left.set(title="recall@10 vs brute-force filtered exact search", ylim=(0, 1.05))
    left.set_xticks(list(xs), names, rotation=20)
    left.legend(loc="lower right", fontsize=8)
    right.bar([x - 0.2 for x in xs], [r["p50_ms"] for r in rows], 0.4, label="p50")
    right.bar([x + 0.2 for x in xs], [r["p99_ms"] for r in rows], 0.4, label="p99")
    right.set(title="latency through simsearch.client, one client (ms)")
    right.set_xticks(list(xs), names, rotation=20)
    right.legend(fontsize=8)
    fig.suptitle(f"Filtered search, {json.loads(source.read_text())['n']:,} vectors, 2 shards")
    fig.tight_layout()
    fig.savefig(target, dpi=110)


if __name__ == "__main__":
    main()
