"""Retrieval quality of the embedder on labelled photos, against a colour-histogram baseline.

Why: throughput says nothing about whether similar photos come back. This script puts a
number on "similar" with the classic content-based-retrieval protocol, so that a change of
model, weights or preprocessing can be judged by what it does to search results.

Protocol (leave-one-out): every image of a dataset is a query; all the *other* images are
ranked by cosine similarity (an exact float64 matrix product, ties broken by file order);
an image is relevant when it has the query's label. Reported per method: mean precision@10,
precision@20, the precision@k curve for k = 1..50 and mAP (average precision over the full
ranking of the N-1 others, averaged over queries).

Methods:
- the project's embedder (`Engine`, exactly the service's code path) for each `--models`
  entry, once with the model's registered preprocessing and, when it differs, once with
  the standard ImageNet mean/std on the same resize/crop;
- a colour-histogram baseline: 8x8x8 joint HSV histogram of the image (longest side at most
  256 px), L1-normalised, compared with cosine like the CNN vectors.

Datasets are folders holding `labels.csv` (`path,label`, path relative to `images/`) and
`images/`. Everything is deterministic: file order from `labels.csv`, fixed batches of 32,
stable sorting, so a rerun on the same machine and thread count gives the same numbers.

    python scripts/bench/quality.py --out docs/quality.json --plot docs/quality.png
    python scripts/bench/quality.py --dataset samples/flowers      # a clone without ../shared
    python scripts/bench/quality.py --self-test                    # checks the metric code only
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image

from simsearch.common.errors import ModelWeightsMissing
from simsearch.common.imaging import decode_image
from simsearch.models.device import resolve_placement
from simsearch.models.engine import Engine, preprocess
from simsearch.models.registry import IMAGENET_MEAN, IMAGENET_STD, ModelSpec, get_spec, load_model

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATASETS = (
    ROOT.parent / "shared" / "datasets" / "corel1k-wang",
    ROOT.parent / "shared" / "datasets" / "tf-flowers-ccby-subset",
)
BATCH = 32
CURVE_K = 50
HIST_BINS = 8
HIST_MAX_SIDE = 256
# What the project promises with standard ImageNet preprocessing (docs/quality.md), keyed by
# dataset folder name. samples/flowers holds the same 500 photos as the flowers subset.
FLOORS: dict[str, dict[str, float]] = {
    "corel1k-wang": {"p@10": 0.95, "mAP": 0.85},
    "tf-flowers-ccby-subset": {"p@10": 0.75, "mAP": 0.49},
    "flowers": {"p@10": 0.75, "mAP": 0.49},
}
FLOOR_VARIANT = "imagenet"

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]


# --------------------------------------------------------------------------- metrics (pure)


def precision_at_k(relevant: Sequence[bool] | BoolArray, k: int) -> float:
    """Fraction of the first `k` ranked items that are relevant (k counts even past the end).

    Dividing by `k` rather than by the items available keeps P@k comparable across
    queries and datasets; every dataset here has far more than 50 items.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return float(np.count_nonzero(np.asarray(relevant[:k], dtype=bool))) / k


def average_precision(relevant: Sequence[bool] | BoolArray) -> float:
    """Mean of precision@rank over the ranks of the relevant items of one full ranking.

    The ranking must be complete (all N-1 others), so that every relevant item is counted
    and a model cannot look good by hiding relevant items below a cut-off. A query with no
    relevant item has no defined AP: NaN, which callers leave out of the mean.
    """
    rel = np.asarray(relevant, dtype=bool)
    hits = int(np.count_nonzero(rel))
    if hits == 0:
        return float("nan")
    ranks = np.flatnonzero(rel) + 1
    return float(np.mean(np.arange(1, hits + 1) / ranks))


def relevance_matrix(vectors: FloatArray, labels: Sequence[str]) -> BoolArray:
    """Leave-one-out rankings as a [N, N-1] relevance matrix: row q, column r = rank r+1.

    Cosine similarity is a float64 matrix product of the L2-normalised rows, so that the
    ranking does not depend on float32 BLAS rounding. The query itself is pushed to the
    end and dropped; ties are broken by file order (stable sort), which makes the result
    reproducible.
    """
    n = len(labels)
    if vectors.shape[0] != n or n < 2:
        raise ValueError(f"need >= 2 vectors matching {n} labels, got shape {vectors.shape}")
    v = vectors.astype(np.float64)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    v = v / np.where(norms > 0, norms, 1.0)
    negsim = -(v @ v.T)
    np.fill_diagonal(negsim, np.inf)
    order = np.argsort(negsim, axis=1, kind="stable")[:, :-1]
    codes = np.unique(np.asarray(labels), return_inverse=True)[1]
    rel: BoolArray = codes[order] == codes[:, None]
    return rel


def leave_one_out_metrics(
    vectors: FloatArray, labels: Sequence[str], max_k: int = CURVE_K
) -> dict[str, Any]:
    """P@10, P@20, mAP and the P@k curve (k = 1..max_k) of leave-one-out retrieval.

    Vectorised over queries; the self-test checks it against the per-query functions
    above. Queries whose label occurs only once have no AP and are left out of mAP (their
    count is reported).
    """
    rel = relevance_matrix(vectors, labels)
    n_others = rel.shape[1]
    hits = np.cumsum(rel, axis=1)
    ks = np.arange(1, n_others + 1)
    curve = [float(np.mean(hits[:, min(k, n_others) - 1])) / k for k in range(1, max_k + 1)]
    n_relevant = hits[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = np.sum(rel * (hits / ks), axis=1) / n_relevant
    defined = n_relevant > 0
    return {
        "p@10": curve[9] if max_k >= 10 else precision_mean(rel, 10),
        "p@20": curve[19] if max_k >= 20 else precision_mean(rel, 20),
        "mAP": float(np.mean(ap[defined])) if defined.any() else float("nan"),
        "queries_without_relevant": int(np.count_nonzero(~defined)),
        "p_at_k": curve,
    }


def precision_mean(rel: BoolArray, k: int) -> float:
    """Mean P@k over the rows of a relevance matrix (for k beyond the curve)."""
    return float(np.mean(np.count_nonzero(rel[:, :k], axis=1))) / k


def color_histogram(rgb: npt.NDArray[np.uint8], bins: int = HIST_BINS) -> FloatArray:
    """Joint HSV histogram with `bins`^3 cells, L1-normalised: the classic CBIR baseline.

    HSV rather than RGB because hue separates "what colour" from "how bright", which is
    what makes a colour histogram work at all across lighting. Pillow's HSV has all three
    channels in 0..255 (hue wraps). L1 normalisation makes images of any size comparable;
    the ranking uses cosine, for which the normalisation does not matter.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 array, got shape {rgb.shape}")
    hsv = np.asarray(Image.fromarray(rgb, "RGB").convert("HSV"), dtype=np.int64)
    idx = (hsv * bins) // 256
    cells = (idx[..., 0] * bins + idx[..., 1]) * bins + idx[..., 2]
    counts = np.bincount(cells.ravel(), minlength=bins**3).astype(np.float32)
    hist: FloatArray = counts / max(float(counts.sum()), 1.0)
    return hist


def self_test() -> None:
    """Check the metric code on hand-made rankings whose answers are known by hand."""
    assert precision_at_k([True, False, True, True], 2) == 0.5
    assert precision_at_k([True, False], 4) == 0.25
    assert abs(average_precision([True, False, True, False]) - (1 + 2 / 3) / 2) < 1e-12
    assert average_precision([False, False, True]) == 1 / 3
    assert np.isnan(average_precision([False, False]))
    # Four unit vectors at angles 0, 0.1 (a) and 0.25, 1.5 (b): the first b sits near the a's.
    angles = np.array([0.0, 0.1, 0.25, 1.5])
    vecs = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    labels = ["a", "a", "b", "b"]
    rel = relevance_matrix(vecs, labels)
    # Query 0 ranks 1 (a), 2 (b), 3 (b); query 3 ranks 2 (b), 1 (a), 0 (a).
    assert rel.tolist()[0] == [True, False, False]
    assert rel.tolist()[3] == [True, False, False]
    assert rel.tolist()[2] == [False, False, True]  # query 2: 1 (a), 0 (a), 3 (b)
    got = leave_one_out_metrics(vecs, labels, max_k=3)
    expected_ap = np.mean([average_precision(r) for r in rel])
    assert abs(got["mAP"] - expected_ap) < 1e-12
    assert abs(got["mAP"] - (1 + 1 + 1 / 3 + 1) / 4) < 1e-12
    assert got["p_at_k"][0] == np.mean([precision_at_k(r, 1) for r in rel]) == 0.75
    assert got["p@10"] == np.mean([precision_at_k(r, 10) for r in rel])
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    hist = color_histogram(red)
    assert hist.shape == (HIST_BINS**3,) and hist.sum() == 1.0 and hist.max() == 1.0
    print("self-test: metric functions OK", file=sys.stderr)


# --------------------------------------------------------------------------- data


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A labelled photo folder: `labels.csv` rows in file order."""

    name: str
    root: Path
    paths: list[Path]
    labels: list[str]

    @property
    def classes(self) -> int:
        return len(set(self.labels))


def load_dataset(root: Path) -> Dataset:
    """Read `labels.csv`; a missing image is an error, not a silently smaller benchmark."""
    with (root / "labels.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if len(rows) < 2:
        raise ValueError(f"{root / 'labels.csv'}: {len(rows)} rows; leave-one-out needs >= 2")
    paths = [root / "images" / row["path"] for row in rows]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} images listed in labels.csv missing: {missing[:3]}"
        )
    return Dataset(root.name, root, paths, [row["label"] for row in rows])


def sha256(path: Path) -> str:
    """Content hash, so the JSON pins exactly which weights / label file were measured."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def display_path(path: Path) -> str:
    """Relative to the repo root when near it, so the committed JSON names no home folder."""
    resolved = path.resolve()
    if resolved.is_relative_to(ROOT.parent):
        return os.path.relpath(resolved, ROOT)
    return str(resolved)


def decode_all(dataset: Dataset) -> tuple[list[Image.Image], float]:
    """Decode every photo once with the service's decoder; returns images and seconds."""
    started = time.perf_counter()
    images = [decode_image(p.read_bytes()) for p in dataset.paths]
    return images, time.perf_counter() - started


# --------------------------------------------------------------------------- methods


@dataclasses.dataclass
class Result:
    """One method on one dataset: metrics plus what is needed to reproduce them."""

    method: str
    label: str
    metrics: dict[str, Any]
    seconds: float
    details: dict[str, Any]


def histogram_result(images: list[Image.Image]) -> Result:
    """The colour-histogram baseline on already decoded images."""
    started = time.perf_counter()
    feats = []
    for img in images:
        small = img.copy()
        small.thumbnail((HIST_MAX_SIDE, HIST_MAX_SIDE), Image.Resampling.BILINEAR)
        feats.append(color_histogram(np.asarray(small, dtype=np.uint8)))
    return Result(
        "color-histogram",
        "colour histogram (HSV 8×8×8)",
        {},
        time.perf_counter() - started,
        {
            "colour_space": "HSV (Pillow, 0..255 per channel)",
            "bins": [HIST_BINS] * 3,
            "max_side": HIST_MAX_SIDE,
            "normalisation": "L1",
            "similarity": "cosine",
            "vectors": np.stack(feats),
        },
    )


def preprocessing_variants(spec: ModelSpec) -> list[tuple[str, ModelSpec]]:
    """`model` = as registered; `imagenet` = same resize/crop with ImageNet mean/std.

    The ImageNet variant is skipped when it would be identical (torchvision models are
    registered with ImageNet's mean/std already).
    """
    variants = [("model", spec)]
    pre = spec.preprocessing
    if (tuple(pre.mean), tuple(pre.std)) != (IMAGENET_MEAN, IMAGENET_STD):
        update = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
        imagenet = dataclasses.replace(spec, preprocessing=pre.model_copy(update=update))
        variants.append(("imagenet", imagenet))
    return variants


def embed_all(engine: Engine, images: list[Image.Image]) -> FloatArray:
    """Preprocess and embed in fixed batches of `BATCH`, in file order (reproducible)."""
    pre = engine.spec.preprocessing
    out = []
    for start in range(0, len(images), BATCH):
        arrays = [preprocess(img, pre) for img in images[start : start + BATCH]]
        out.append(engine.embed(arrays))
    vectors: FloatArray = np.concatenate(out).astype(np.float32)
    return vectors


def model_results(name: str, images: list[Image.Image], device: str) -> list[Result]:
    """Both preprocessing variants of one registry model; [] (with a message) without weights."""
    spec = get_spec(name)
    try:
        module, weights = load_model(spec, None)
    except ModelWeightsMissing as exc:
        print(f"skipping {name}: {exc}", file=sys.stderr)
        return []
    results = []
    for variant, vspec in preprocessing_variants(spec):
        engine = Engine(vspec, module, resolve_placement(device, "fp32"), weights)
        started = time.perf_counter()
        vectors = embed_all(engine, images)
        pre = vspec.preprocessing
        results.append(
            Result(
                f"{name}:{variant}",
                f"{name}, {'model' if variant == 'model' else 'ImageNet'} mean/std",
                {},
                time.perf_counter() - started,
                {
                    "model": name,
                    "variant": variant,
                    "weights": display_path(Path(weights)) if Path(weights).is_file() else weights,
                    "weights_sha256": sha256(Path(weights)) if Path(weights).is_file() else None,
                    "preprocessing": pre.model_dump(mode="json"),
                    "device": str(engine.placement.device),
                    "precision": engine.placement.precision,
                    "batch": BATCH,
                    "vectors": vectors,
                },
            )
        )
    return results


def evaluate(dataset: Dataset, models: Sequence[str], device: str) -> list[Result]:
    """Every method on one dataset; ranking time is added to each method's seconds."""
    images, decode_s = decode_all(dataset)
    print(f"{dataset.name}: decoded {len(images)} images in {decode_s:.1f}s", file=sys.stderr)
    results = [r for name in models for r in model_results(name, images, device)]
    results.append(histogram_result(images))
    for result in results:
        started = time.perf_counter()
        result.metrics = leave_one_out_metrics(result.details.pop("vectors"), dataset.labels)
        result.seconds += decode_s + time.perf_counter() - started
        print(
            f"  {result.method:<32} P@10 {result.metrics['p@10']:.3f}  "
            f"mAP {result.metrics['mAP']:.3f}  ({result.seconds:.0f}s)",
            file=sys.stderr,
        )
    return results


# --------------------------------------------------------------------------- report


def floor_check(dataset: Dataset, results: list[Result]) -> dict[str, Any] | None:
    """Whether the ImageNet-preprocessing variant meets the project's floor for this set."""
    floor = FLOORS.get(dataset.name)
    target = next((r for r in results if r.method.endswith(f":{FLOOR_VARIANT}")), None)
    if floor is None or target is None:
        return None
    measured = {key: round(target.metrics[key], 6) for key in floor}
    met = all(target.metrics[key] >= value for key, value in floor.items())
    return {"method": target.method, "floor": floor, "measured": measured, "met": met}


def dataset_record(dataset: Dataset, results: list[Result]) -> dict[str, Any]:
    """The JSON block of one dataset."""
    return {
        "path": display_path(dataset.root),
        "labels_sha256": sha256(dataset.root / "labels.csv"),
        "n": len(dataset.labels),
        "classes": dataset.classes,
        "floor_check": floor_check(dataset, results),
        "methods": {
            r.method: {
                "label": r.label,
                **{k: round(v, 6) for k, v in r.metrics.items() if isinstance(v, float)},
                "queries_without_relevant": r.metrics["queries_without_relevant"],
                "n": len(dataset.labels),
                "classes": dataset.classes,
                "seconds": round(r.seconds, 2),
                **r.details,
                "p_at_k": [round(p, 4) for p in r.metrics["p_at_k"]],
            }
            for r in results
        },
    }


def environment(threads: int) -> dict[str, Any]:
    """Versions and settings that can move the numbers."""
    return {
        "command": " ".join(["python", *sys.argv]),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "threads": threads,
        "protocol": (
            "leave-one-out: every image queries all N-1 others, ranked by cosine "
            "(float64, ties by file order); relevant = same label; mAP over the full ranking"
        ),
    }


def print_table(records: dict[str, dict[str, Any]]) -> None:
    """A plain-text table on stdout: one row per dataset and method."""
    print(f"{'dataset':<24} {'method':<30} {'n':>5} {'P@10':>6} {'P@20':>6} {'mAP':>6} {'s':>6}")
    for name, record in records.items():
        for method, m in record["methods"].items():
            print(
                f"{name:<24} {method:<30} {m['n']:>5} {m['p@10']:>6.3f} {m['p@20']:>6.3f} "
                f"{m['mAP']:>6.3f} {m['seconds']:>6.0f}"
            )
        check = record["floor_check"]
        if check is not None:
            verdict = "met" if check["met"] else "NOT MET"
            terms = ", ".join(
                f"{key} {check['measured'][key]:.3f} >= {value}"
                for key, value in check["floor"].items()
            )
            print(f"  floor for {check['method']}: {terms}: {verdict}")


def plot(records: dict[str, dict[str, Any]], out: Path) -> None:
    """One panel per dataset: P@k curves per method, mAP in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, len(records), figsize=(6 * len(records), 4.8), dpi=100, squeeze=False
    )
    styles: list[dict[str, Any]] = [
        {"color": "tab:blue", "linestyle": "-"},
        {"color": "tab:orange", "linestyle": "--"},
        {"color": "tab:green", "linestyle": "-."},
        {"color": "tab:red", "linestyle": ":"},
        {"color": "tab:purple", "linestyle": "-"},
    ]
    for ax, (name, record) in zip(axes[0], records.items(), strict=True):
        for i, m in enumerate(record["methods"].values()):
            ks = range(1, len(m["p_at_k"]) + 1)
            style = {"color": "tab:gray", "linestyle": ":"} if "histogram" in m["label"] else None
            ax.plot(
                ks,
                m["p_at_k"],
                linewidth=2,
                label=f"{m['label']} (mAP {m['mAP']:.3f})",
                **(style or styles[i % len(styles)]),
            )
        ax.set_title(f"{name}: {record['n']} photos, {record['classes']} classes")
        ax.set_xlabel("k (top-k results, query excluded)")
        ax.set_ylabel("precision@k")
        ax.set_ylim(0, 1.02)
        ax.set_xlim(1, CURVE_K)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=9)
    fig.suptitle("Leave-one-out retrieval precision (cosine, same label = relevant)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


# --------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command line; see the module docstring."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--dataset",
        type=Path,
        action="append",
        help="folder with labels.csv and images/ (repeatable; default: the two sets under "
        "../shared/datasets)",
    )
    parser.add_argument("--models", nargs="+", default=["efficientnet-lite0"])
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    parser.add_argument("--out", type=Path, help="write results as JSON here")
    parser.add_argument("--plot", type=Path, help="write the precision@k plot (PNG) here")
    parser.add_argument("--self-test", action="store_true", help="check the metrics and exit")
    return parser.parse_args(argv)


def existing_datasets(requested: list[Path] | None) -> list[Path]:
    """The folders to measure: explicit ones must exist, missing defaults are skipped."""
    if requested:
        for path in requested:
            if not (path / "labels.csv").is_file():
                raise SystemExit(f"{path}: no labels.csv (expected labels.csv and images/)")
        return requested
    found = []
    for path in DEFAULT_DATASETS:
        if (path / "labels.csv").is_file():
            found.append(path)
        else:
            print(
                f"skipping {path}: not found (pass --dataset samples/flowers in a clone)",
                file=sys.stderr,
            )
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, print, and write the JSON and the plot when asked."""
    args = parse_args(argv)
    self_test()
    if args.self_test:
        return 0
    roots = existing_datasets(args.dataset)
    if not roots:
        print("no dataset to measure", file=sys.stderr)
        return 1
    torch.set_num_threads(args.threads)
    records: dict[str, dict[str, Any]] = {}
    for root in roots:
        dataset = load_dataset(root)
        records[dataset.name] = dataset_record(dataset, evaluate(dataset, args.models, args.device))
    print_table(records)
    if args.out:
        report = {"environment": environment(args.threads), "datasets": records}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    if args.plot:
        plot(records, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
