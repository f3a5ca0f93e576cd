"""Plot `monitor_bench.py`'s figures: the recall gauge following an nprobe switch, and
p99 against a shard's memory limit with the shard's own `needed_bytes` estimate.

python scripts/bench/plot_monitor.py docs/bench/recall_monitor_100k.json \
    docs/bench/memory_sizing_100k.json docs/bench/memory_sizing_1m.json docs/img/monitor.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

MIB = 1 << 20


def recall_panel(ax: Any, run: dict[str, Any]) -> None:
    """The gauge every second after the switch, with the two offline figures."""
    points = [(t, g) for t, g in run["timeline_low"]["points"] if g is not None]
    ax.plot([t for t, _ in points], [g for _, g in points], label="simsearch_recall_at_k")
    ax.axhline(run["offline_recall"], ls="--", c="grey", label=f"offline, nprobe {run['nprobe']}")
    ax.axhline(
        run["offline_recall_low"], ls=":", c="black", label=f"offline, nprobe {run['low_nprobe']}"
    )
    ax.axvline(run["follow_window_s"], c="red", lw=0.8, label="one window")
    ax.set_xlabel("seconds after the switch to the lower nprobe")
    ax.set_ylabel("recall@10")
    ax.set_title("Live recall follows an nprobe change (100k)")
    ax.legend(fontsize=8)


def memory_panel(ax: Any, runs: list[tuple[str, dict[str, Any]]]) -> None:
    """p99 / cached p99 at each limit, with each run's reported needed bytes."""
    for (name, run), colour in zip(runs, ("tab:blue", "tab:orange"), strict=False):
        steps = [s for s in run["steps"] if s["limit_bytes"]]
        base = run["cached_p99_ms"]
        ax.plot(
            [s["limit_bytes"] / MIB for s in steps],
            [s["p99_ms"] / base for s in steps],
            "o-",
            c=colour,
            label=f"{name}: p99 / cached p99",
        )
        needed = run["needed_bytes_reported"] / MIB
        ax.axvline(needed, c=colour, ls="--", label=f"{name}: needed_bytes {needed:.0f} MiB")
    ax.axhline(2, c="red", lw=0.8, label="2× the cached p99")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("shard memory limit (MiB, cgroup)")
    ax.set_ylabel("p99 / fully cached p99")
    ax.set_title("One shard in a memory cgroup")
    ax.legend(fontsize=8)


def main() -> None:
    recall, *sizing, target = (Path(a) for a in sys.argv[1:])
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    recall_panel(left, json.loads(recall.read_text()))
    runs = [(p.stem.rsplit("_", 1)[-1], json.loads(p.read_text())) for p in sizing]
    memory_panel(right, runs)
    fig.tight_layout()
    fig.savefig(target, dpi=110)


if __name__ == "__main__":
    main()
