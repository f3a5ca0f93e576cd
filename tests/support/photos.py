"""The bundled flower photos and a CPU engine over them, for the embedder's model tests."""

from __future__ import annotations

import csv

import numpy as np
import torch

from simsearch.common.imaging import decode_image
from simsearch.models.device import resolve_placement
from simsearch.models.engine import Engine, preprocess
from simsearch.models.registry import get_spec, load_model
from tests.support.paths import SAMPLES


def sample_rows() -> list[dict[str, str]]:
    """`labels.csv` of the bundled photos: path and label per row."""
    with (SAMPLES / "labels.csv").open() as handle:
        return list(csv.DictReader(handle))


def cpu_engine(model: str) -> Engine:
    """The registry's `model` on its installed weights, on the CPU, 2 torch threads."""
    torch.set_num_threads(2)
    spec = get_spec(model)
    module, weights = load_model(spec, None)
    return Engine(spec, module, resolve_placement("cpu", "auto"), weights)


def load_sample(path: str, engine: Engine) -> np.ndarray:
    """One bundled photo, decoded and preprocessed for `engine`'s model."""
    image = decode_image((SAMPLES / "images" / path).read_bytes())
    return preprocess(image, engine.spec.preprocessing)
