"""Draw docs/img/architecture.png: the components, the object store between them, and the
two data flows (building an index, answering a query).

    .venv/bin/python scripts/architecture_diagram.py [--out docs/img/architecture.png]

A drawing made by code rather than by hand so that a renamed component is one edit here
and a rerun; matplotlib is already a dev dependency (no graphviz on the build machines).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

BUILD = "#b5651d"  # the index-building flow
QUERY = "#1f5fa8"  # the query flow
CONTROL = "#777777"  # polls and watches


@dataclass(frozen=True)
class Box:
    """A component: its centre, size, title and the modules that make it."""

    x: float
    y: float
    title: str
    body: str
    w: float = 2.6
    h: float = 1.25
    face: str = "#f4f4f4"

    def edge(self, side: str) -> tuple[float, float]:
        """The middle of one side ("n", "s", "e", "w"): where arrows attach."""
        dx = {"e": self.w / 2, "w": -self.w / 2}.get(side, 0.0)
        dy = {"n": self.h / 2, "s": -self.h / 2}.get(side, 0.0)
        return self.x + dx, self.y + dy


BOXES = {
    "client": Box(1.6, 6.2, "client", "browser page, curl,\nan application", face="#ffffff"),
    "router": Box(5.2, 6.2, "router", "edge · access gate\nfan-out · merge top-k", face="#e3edf9"),
    "embedder": Box(9.0, 6.2, "embedder", "CNN on GPU/CPU\nmicro-batcher", face="#e3edf9"),
    "shards": Box(
        5.2,
        3.4,
        "shards (StatefulSet)",
        "own partitions by ordinal\nmmap · IVF fast-scan",
        face="#e3edf9",
    ),
    "store": Box(
        5.2,
        0.8,
        "object store (S3 / MinIO / dir)",
        "images/ · index/<name>/versions/<v>/ · CURRENT",
        w=5.6,
        face="#fbf3e6",
    ),
    "indexer": Box(
        9.6,
        2.9,
        "indexer (job)",
        "scan · embed · train\nwrite partitions · publish",
        face="#fbf3e6",
    ),
}


def draw_box(ax: Axes, box: Box) -> None:
    """One rounded box with a bold title over a smaller body."""
    ax.add_patch(
        FancyBboxPatch(
            (box.x - box.w / 2, box.y - box.h / 2),
            box.w,
            box.h,
            boxstyle="round,pad=0.05,rounding_size=0.12",
            facecolor=box.face,
            edgecolor="#333333",
            linewidth=1.2,
        )
    )
    ax.text(box.x, box.y + 0.28, box.title, ha="center", va="center", fontsize=10.5, weight="bold")
    ax.text(box.x, box.y - 0.2, box.body, ha="center", va="center", fontsize=8.5)


def arrow(
    ax: Axes,
    start: tuple[float, float],
    end: tuple[float, float],
    color: str,
    label: str,
    *,
    rad: float = 0.0,
    dashed: bool = False,
    dx: float = 0.0,
) -> None:
    """An arrow with its label at the midpoint (moved `dx` sideways to clear a neighbour)."""
    ax.add_patch(
        FancyArrowPatch(
            start,
            end,
            arrowstyle="-|>",
            mutation_scale=14,
            color=color,
            linewidth=1.6,
            linestyle="--" if dashed else "-",
            connectionstyle=f"arc3,rad={rad}",
        )
    )
    mx, my = (start[0] + end[0]) / 2 + dx, (start[1] + end[1]) / 2
    ax.text(
        mx,
        my,
        label,
        ha="center",
        va="center",
        fontsize=8,
        color=color,
        bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.0},
    )


def draw(out: Path) -> None:
    """Lay out the boxes and both flows, and save the picture."""
    fig, ax = plt.subplots(figsize=(11, 7.4))
    ax.set_xlim(0, 11.4)
    ax.set_ylim(-0.7, 7.3)
    ax.axis("off")
    for box in BOXES.values():
        draw_box(ax, box)
    b = BOXES
    arrow(ax, b["client"].edge("e"), b["router"].edge("w"), QUERY, "1 POST /search/image")
    arrow(ax, b["router"].edge("e"), b["embedder"].edge("w"), QUERY, "2 /embed → vector")
    arrow(
        ax,
        b["router"].edge("s"),
        b["shards"].edge("n"),
        QUERY,
        "3 /search: partitions listed\n4 candidates → merge",
    )
    arrow(
        ax,
        (b["shards"].x - 0.9, b["shards"].y - b["shards"].h / 2),
        (b["shards"].x - 0.9, b["store"].y + b["store"].h / 2),
        CONTROL,
        "poll CURRENT",
        dashed=True,
        dx=-0.75,
    )
    arrow(
        ax,
        (b["shards"].x + 0.9, b["store"].y + b["store"].h / 2),
        (b["shards"].x + 0.9, b["shards"].y - b["shards"].h / 2),
        BUILD,
        "download ·\nverify · mmap",
        dx=0.75,
    )
    arrow(
        ax,
        (b["store"].x + 2.2, b["store"].y + b["store"].h / 2),
        b["indexer"].edge("w"),
        BUILD,
        "a list images",
        dx=0.75,
    )
    arrow(ax, b["indexer"].edge("n"), b["embedder"].edge("s"), BUILD, "b /embed/keys")
    arrow(
        ax,
        b["indexer"].edge("s"),
        b["store"].edge("e"),
        BUILD,
        "c partitions, manifest;\nCURRENT flipped last",
        rad=-0.35,
        dx=0.5,
    )
    arrow(
        ax,
        (b["router"].x - 1.3, b["router"].y - 0.4),
        (b["shards"].x - 1.3, b["shards"].y + 0.4),
        CONTROL,
        "discover\n/info poll",
        dashed=True,
        rad=0.25,
    )
    ax.text(
        0.2,
        -0.45,
        "blue: a query    brown: building an index    grey dashed: polls and watches",
        fontsize=8.5,
        color="#444444",
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/img/architecture.png"))
    draw(parser.parse_args().out)


if __name__ == "__main__":
    main()
