"""The drift baseline of a build (`CentroidFit`) and the `--retrain` advice.

A template (PCA, coarse centroids, codebooks) is trained once and then reused by every
incremental build until someone passes `--retrain`. That is right while new images look
like the old ones, and quietly wrong once they do not: vectors far from every centroid
land in lists that were not shaped for them, and their recall suffers while the build-time
probe (run on the old vectors too) still looks fine. The cheapest honest signal is the
distance of a vector to its nearest coarse centroid, in the scoring space, exactly as the
shard measures it for live queries (`Template.centroid_distance` after `Template.project`
and one coarse search):

- `trained`: the mean over (a sample of) the vectors the template was trained on. It is
  the template's own yardstick, so an incremental build that reuses the template carries
  it over unchanged;
- `indexed`, `p90`, `sample`: over a seeded sample of this version's vectors: what a shard
  compares live queries with (`simsearch_drift_ratio`);
- the advice: an incremental build that reuses the template compares the vectors embedded
  in *this* build with `trained`; well above the yardstick (`SIMSEARCH_DRIFT_ADVICE_RATIO`)
  it tells the operator to retrain.

Exact plans (one list, a brute-force scan) have no centroid worth measuring: no fit.
Samples of at most `FIT_SAMPLE` vectors and one coarse search each keep this to a fraction
of a second next to a build of minutes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from simsearch.common.ann import Template, unit_rows
from simsearch.common.manifest import CentroidFit, Manifest

FIT_SAMPLE = 20_000  # vectors per figure: the mean's standard error is far below any drift
BLOCK = 8_192  # rows projected and searched at a time (bounds the float32 copies)
TRAINED_SEED, INDEXED_SEED, FRESH_SEED = 1, 2, 3  # one seeded sample per figure

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fit:
    """What a build measured: the manifest's baseline and, with a reused template, the
    figure of the vectors new in this build (what the advice compares)."""

    centroid_fit: CentroidFit | None  # None: an exact plan
    reused: bool = False  # whether the template came from the parent version
    fresh_mean: float | None = None  # the new vectors' mean distance (reused template only)
    fresh_sample: int = 0
    seconds: float = 0.0

    @property
    def ratio(self) -> float | None:
        """The new vectors' mean distance over the template's training mean (None: no
        figure, i.e. a fresh training, an exact plan or nothing new)."""
        fit = self.centroid_fit
        if fit is None or self.fresh_mean is None or fit.trained <= 0:
            return None
        return self.fresh_mean / fit.trained

    def summary(self) -> dict[str, float | int | bool | None]:
        """The figures for the build report (JSON) and the log."""
        fit = self.centroid_fit
        return {
            "trained": fit.trained if fit else None,
            "indexed": fit.indexed if fit else None,
            "p90": fit.p90 if fit else None,
            "sample": fit.sample if fit else 0,
            "reused_template": self.reused,
            "fresh_mean": self.fresh_mean,
            "fresh_sample": self.fresh_sample,
            "ratio": None if self.ratio is None else round(self.ratio, 4),
            "seconds": round(self.seconds, 3),
        }


def sample(rows: np.ndarray, size: int = FIT_SAMPLE, seed: int = 0) -> np.ndarray:
    """At most `size` of `rows`, seeded (the same build gives the same figures), sorted."""
    if len(rows) <= size:
        return np.asarray(rows, dtype=np.int64)
    chosen = np.random.default_rng(seed).choice(len(rows), size, replace=False)
    return np.sort(np.asarray(rows, dtype=np.int64)[chosen])


def distances(template: Template, x: np.ndarray, projected: bool = False) -> np.ndarray:
    """Each raw vector's distance to its nearest list centroid, in the scoring space.

    Rows are scaled to unit length first, as the router does with every query, then go
    through the shard's own steps: `project`, one coarse search, `centroid_distance`.
    `projected` rows are in the scoring space already (a PCA version's stored features).
    """
    out = np.empty(len(x), dtype=np.float32)
    for start in range(0, len(x), BLOCK):
        block = unit_rows(np.asarray(x[start : start + BLOCK], dtype=np.float32))
        xq = block if projected else template.project(block)
        out[start : start + len(xq)] = template.centroid_distance(xq, *template.coarse(xq, 1))
    return out


def measure(
    template: Template,
    vectors: np.ndarray,
    trained_rows: np.ndarray | None,
    reused: Manifest | None,
    fresh: np.ndarray | None = None,
    projected: bool = False,
) -> Fit:
    """The fit of a version about to be published (logged with the seconds it took).

    `vectors` are all of the version's vectors (raw, any length); `trained_rows` the rows
    the template was just trained on (None when it is `reused`'s); `fresh` the rows
    embedded in this build (None: unknown, e.g. `write_index` called directly). With a
    reused template `trained` is the parent's own figure; a parent without one (built
    before the field) gets the mean of a sample of its vectors still in this version (the
    rows not in `fresh`; all of them when `fresh` is unknown): the best stand-in for its
    training sample there is, since the parent's template was trained on the parent.
    `projected`: `vectors` are in the scoring space already (`distances`).
    """
    if template.nlist <= 1:
        return Fit(None, reused is not None)
    started = time.perf_counter()

    def mean_of(rows: np.ndarray, seed: int) -> tuple[float, np.ndarray]:
        found = distances(template, vectors[sample(rows, seed=seed)], projected)
        return _mean(found), found

    _, indexed = mean_of(np.arange(len(vectors)), INDEXED_SEED)
    trained = _trained_mean(mean_of, len(vectors), trained_rows, reused, fresh)
    fresh_mean, fresh_count = None, 0
    if reused is not None and fresh is not None and len(fresh):
        fresh_mean, fresh_count = mean_of(fresh, FRESH_SEED)[0], min(len(fresh), FIT_SAMPLE)
    fit = CentroidFit(
        trained=trained,
        indexed=_mean(indexed),
        p90=round(float(np.percentile(indexed, 90)), 6),
        sample=len(indexed),
    )
    found = Fit(fit, reused is not None, fresh_mean, fresh_count, time.perf_counter() - started)
    log.info("centroid fit: %s", found.summary())
    return found


def _trained_mean(
    mean_of: Callable[[np.ndarray, int], tuple[float, np.ndarray]],
    n: int,
    trained_rows: np.ndarray | None,
    reused: Manifest | None,
    fresh: np.ndarray | None,
) -> float:
    """`trained`: over the training sample, or carried over from the reused parent."""
    if reused is not None and reused.centroid_fit is not None:
        return reused.centroid_fit.trained
    if reused is None and trained_rows is not None:
        rows = trained_rows
    else:  # a parent from before `centroid_fit`: its vectors still indexed stand in
        rows = np.arange(n)
        if fresh is not None and len(fresh) < n:
            rows = np.setdiff1d(rows, fresh)
    return mean_of(rows, TRAINED_SEED)[0]


def _mean(d: np.ndarray) -> float:
    return round(float(np.mean(d, dtype=np.float64)), 6) if len(d) else 0.0


def advice(fit: Fit, threshold: float, full: bool = False) -> str | None:
    """The one line `simsearch index build` prints when the new vectors drifted past
    `threshold` × the template's training figure; None below it or without a figure.

    `full`: the index keeps its vectors only projected (a PCA version), so a new template
    needs every image embedded again: `--full` instead of `--retrain`.
    """
    ratio = fit.ratio
    if ratio is None or ratio <= threshold:
        return None
    remedy = (
        "`simsearch index build --full` (its vectors are stored projected: every image "
        "is embedded again)"
        if full
        else "`simsearch index build --retrain`"
    )
    return (
        f"advice: the new images lie {ratio:.2f}× farther from the index's centroids than "
        f"its training sample; the template no longer fits them: rebuild with {remedy}"
    )
