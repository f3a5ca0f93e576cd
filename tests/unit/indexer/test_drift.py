"""The drift baseline (`indexer/drift.py`) on synthetic photo-like vectors, through the writer.

Vectors are clustered unit vectors like `scripts/bench/search_bench.clustered` (noise
around random centres), small enough to train a real fast-scan template (PCA16, 32 lists,
PQ4x4) in about a second. Every version is a real one, written by `write_index` into a
file store, so the figures checked are the ones a manifest records.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simsearch.common.ann import Template, unit_rows
from simsearch.common.errors import InvalidParameter
from simsearch.common.ids import key_ids
from simsearch.common.layout import IndexLayout
from simsearch.common.manifest import Manifest, ModelInfo
from simsearch.common.storage import open_store
from simsearch.indexer.drift import FIT_SAMPLE, Fit, advice, distances, measure, sample
from simsearch.indexer.faissbuild import choose_params
from simsearch.indexer.settings import DEFAULT_DRIFT_ADVICE_RATIO
from simsearch.indexer.writer import write_index

DIM, N, NEW = 48, 4000, 1000
MODEL = ModelInfo(name="synthetic", dim=DIM)
# the fast-scan plan with a PCA, 4-dimensional codes (the codes do not matter here, and 16
# one-dimensional codebooks cost seconds to train)
PLAN = choose_params(N, DIM, nlist=32, pq_m=4, kind="fastscan", pca_dim=16)


def clustered(n: int, seed: int, centre_seed: int = 12345, centres: int = 32) -> np.ndarray:
    """Unit vectors around `centres` random centres (`centre_seed` picks the centres)."""
    rng = np.random.default_rng(seed)
    middle = np.random.default_rng(centre_seed).standard_normal((centres, DIM))
    x = middle[rng.integers(0, centres, n)] + 0.8 * rng.standard_normal((n, DIM))
    return unit_rows(x.astype(np.float32))


OLD = clustered(N, seed=0)
SAME = clustered(NEW, seed=1)  # the same centres, new draws
SHIFTED = clustered(NEW, seed=2, centre_seed=777)  # centres the template never saw


def keys_of(n: int, start: int = 0) -> list[str]:
    return [f"img/{i:06d}.jpg" for i in range(start, start + n)]


def write(layout: IndexLayout, x: np.ndarray, **kw: object) -> tuple[Manifest, list[Fit]]:
    """A version of `x` (keys img/000000.jpg, … in row order) and the fits it reported."""
    fits: list[Fit] = []
    keys = keys_of(len(x))
    manifest = write_index(
        layout,
        key_ids(keys),
        x,
        keys,
        MODEL,
        partitions=2,
        probe_recall=False,
        on_fit=fits.append,
        **kw,  # type: ignore[arg-type]
    )
    return manifest, fits


@pytest.fixture(scope="module")
def parent(tmp_path_factory: pytest.TempPathFactory) -> tuple[IndexLayout, Manifest]:
    layout = IndexLayout(open_store(str(tmp_path_factory.mktemp("store"))))
    manifest, fits = write(layout, OLD, params=PLAN)
    assert len(fits) == 1 and not fits[0].reused and fits[0].ratio is None
    return layout, manifest


def incremental(parent: tuple[IndexLayout, Manifest], new: np.ndarray, **kw: object) -> Fit:
    """An incremental build of `parent` that adds `new` (rows after the old ones)."""
    layout, base = parent
    fresh = np.arange(N, N + len(new))
    kw.setdefault("base", base)
    manifest, fits = write(layout, np.concatenate([OLD, new]), fresh=fresh, **kw)
    assert manifest.centroid_fit == fits[0].centroid_fit
    return fits[0]


def test_a_trained_version_records_its_fit(parent: tuple[IndexLayout, Manifest]) -> None:
    fit = parent[1].centroid_fit
    assert fit is not None and fit.sample == N  # fewer than FIT_SAMPLE vectors: all of them
    # the template was trained on every vector (train_size ≥ N): the same figure twice
    assert PLAN.train_size >= N and fit.trained == fit.indexed
    assert 0 < fit.indexed < fit.p90 < 2  # unit vectors: at most 2 from a unit centroid


def test_new_vectors_like_the_old_give_about_one_and_no_advice(
    parent: tuple[IndexLayout, Manifest],
) -> None:
    fit = incremental(parent, SAME)
    base = parent[1].centroid_fit
    assert fit.reused and fit.fresh_sample == NEW
    assert fit.centroid_fit is not None and base is not None
    assert fit.centroid_fit.trained == base.trained  # carried over with the template
    assert fit.centroid_fit.sample == N + NEW
    assert fit.ratio is not None and 0.9 < fit.ratio < 1.1
    assert advice(fit, DEFAULT_DRIFT_ADVICE_RATIO) is None


def test_vectors_from_unseen_clusters_pass_the_threshold_and_get_the_advice(
    parent: tuple[IndexLayout, Manifest],
) -> None:
    fit = incremental(parent, SHIFTED)
    assert fit.ratio is not None and fit.ratio > DEFAULT_DRIFT_ADVICE_RATIO
    line = advice(fit, DEFAULT_DRIFT_ADVICE_RATIO)
    assert line is not None and f"{fit.ratio:.2f}× farther" in line
    assert "simsearch index build --retrain" in line
    assert advice(fit, fit.ratio + 0.01) is None  # the threshold is the setting's, not fixed


def test_a_retrained_template_gives_no_advice(parent: tuple[IndexLayout, Manifest]) -> None:
    fit = incremental(parent, SHIFTED, retrain=True, params=PLAN)
    assert not fit.reused and fit.fresh_mean is None and fit.ratio is None
    assert fit.centroid_fit is not None and advice(fit, DEFAULT_DRIFT_ADVICE_RATIO) is None
    old = parent[1].centroid_fit
    assert old is not None and fit.centroid_fit.trained != old.trained  # measured anew


def test_a_parent_without_a_fit_is_measured_on_its_own_vectors(
    parent: tuple[IndexLayout, Manifest],
) -> None:
    """A parent built before `centroid_fit`: its vectors still in the version stand in for
    its training sample, which here was all of them, so the figure is the same."""
    old = parent[1].centroid_fit
    fit = incremental(parent, SHIFTED, base=parent[1].model_copy(update={"centroid_fit": None}))
    assert fit.centroid_fit is not None and old is not None
    assert fit.centroid_fit.trained == old.trained
    assert fit.ratio is not None and fit.ratio > DEFAULT_DRIFT_ADVICE_RATIO


def test_an_exact_plan_records_no_fit(tmp_path: Path) -> None:
    layout = IndexLayout(open_store(str(tmp_path)))
    manifest, fits = write(layout, OLD[:300])
    assert manifest.params.factory == "IVF1,Flat"
    assert manifest.centroid_fit is None and fits[0].ratio is None
    assert layout.load_manifest().centroid_fit is None


@pytest.fixture(scope="module")
def template(
    parent: tuple[IndexLayout, Manifest], tmp_path_factory: pytest.TempPathFactory
) -> Template:
    """The parent's template, read back from its `trained.faiss`."""
    layout, manifest = parent
    path = tmp_path_factory.mktemp("trained") / "trained.faiss"
    layout.store.download_file(layout.resolve(manifest.trained), path)
    return Template.read(str(path))


def test_the_fit_is_deterministic_and_its_samples_seeded(template: Template) -> None:
    rows = np.arange(3 * FIT_SAMPLE)
    first, again = sample(rows, seed=2), sample(rows, seed=2)
    assert len(first) == FIT_SAMPLE and np.array_equal(first, again)
    assert np.all(np.diff(first) > 0) and np.isin(first, rows).all()  # sorted, no repeats
    assert not np.array_equal(first, sample(rows, seed=3))
    assert np.array_equal(sample(rows[:10]), rows[:10])  # under the cap: every row

    x = clustered(2 * FIT_SAMPLE + 10, seed=4)
    one, two = measure(template, x, None, None), measure(template, x, None, None)
    assert one.centroid_fit == two.centroid_fit and one.centroid_fit is not None
    assert one.centroid_fit.sample == FIT_SAMPLE


def test_distances_are_to_the_nearest_centroid_in_the_scoring_space(template: Template) -> None:
    """What a shard computes for a live query: normalised, projected, nearest list."""
    x = 3.0 * clustered(200, seed=5)  # not unit length: queries are normalised first
    xq = template.project(unit_rows(x))
    centroids = template.quantizer.reconstruct_n(0, template.nlist)
    brute = np.sqrt(((xq[:, None, :] - centroids[None]) ** 2).sum(-1)).min(axis=1)
    assert np.allclose(distances(template, x), brute, atol=1e-4)


def test_vectors_given_in_the_scoring_space_are_measured_alike(
    parent: tuple[IndexLayout, Manifest], template: Template
) -> None:
    """A PCA version's stored vectors are projected: an incremental build hands them over
    as such (`space="index"`), and the figures are those of the raw vectors."""
    layout, base = parent
    raw = incremental(parent, SHIFTED)
    y = template.project(np.concatenate([OLD, SHIFTED]))
    fresh = np.arange(N, N + NEW)
    _, fits = write(layout, y, base=base, fresh=fresh, space="index")
    assert fits[0].ratio is not None and raw.ratio is not None
    assert abs(fits[0].ratio - raw.ratio) < 1e-4
    with pytest.raises(InvalidParameter, match="template reused"):  # no PCA from projections
        write(layout, y, base=base, fresh=fresh, space="index", retrain=True)
