"""Plot the embedder throughput results (CPU HTTP vs raw, GPU by batch) into docs/.

    python scripts/bench/plot_throughput.py --cpu docs/bench/embed_throughput_cpu.json \
        --gpu docs/bench/gpu_resnet50.json docs/bench/gpu_lite0.json --out docs/throughput.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def plot_cpu(ax: Any, cpu: dict[str, Any]) -> None:
    """One pair of bars per alternation: raw model vs. served over HTTP, by batch size."""
    runs = cpu["runs"]
    labels = [f"b{r['batch']}#{i % 5 + 1}" for i, r in enumerate(runs)]
    xs = range(len(runs))
    ax.bar([x - 0.2 for x in xs], [r["raw_images_per_s"] for r in runs], 0.4, label="raw model")
    ax.bar(
        [x + 0.2 for x in xs],
        [r["images_per_s"] for r in runs],
        0.4,
        label=f"HTTP, {cpu['clients']} clients",
    )
    for x, r in zip(xs, runs, strict=True):
        ax.text(x + 0.2, r["images_per_s"] + 0.5, f"{r['ratio']:.2f}", ha="center", fontsize=8)
    ax.set_xticks(list(xs), labels, rotation=45, fontsize=8)
    ax.set_ylabel("images/s")
    medians = ", ".join(f"batch {b}: {m:.2f}" for b, m in cpu["median_ratio"].items())
    ax.set_title(
        f"CPU ({cpu['cores']} cores, {cpu['threads']} torch threads), EfficientNet-Lite0\n"
        f"HTTP/raw median {medians}",
        fontsize=10,
    )
    ax.legend(fontsize=8)


def plot_gpu(ax: Any, gpus: list[dict[str, Any]]) -> None:
    """Images/s by batch size: model alone, and with JPEG decoding (threads / processes)."""
    for gpu in gpus:
        batches = [r["batch"] for r in gpu["runs"]]
        name = gpu["model"]
        ax.plot(
            batches,
            [r["model_images_per_s"] for r in gpu["runs"]],
            "o-",
            label=f"{name}: model only",
        )
        ax.plot(
            batches,
            [r["pipeline_processes_images_per_s"] for r in gpu["runs"]],
            "s--",
            label=f"{name}: + decode (processes)",
        )
        ax.plot(
            batches,
            [r["pipeline_threads_images_per_s"] for r in gpu["runs"]],
            "^:",
            label=f"{name}: + decode (threads)",
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks([64, 128, 256], ["64", "128", "256"])
    ax.set_xlabel("batch size")
    ax.set_ylabel("images/s")
    ax.set_title(f"{gpus[0]['gpu']}, {gpus[0]['precision']}, channels_last", fontsize=10)
    ax.legend(fontsize=7)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", type=Path, required=True)
    parser.add_argument("--gpu", type=Path, nargs="+", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    plot_cpu(left, load(args.cpu))
    plot_gpu(right, [load(p) for p in args.gpu])
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)


if __name__ == "__main__":
    main()
