"""The embedding engine on the real pretrained EfficientNet-Lite0, on the CPU.

These use the photos the project ships (samples/flowers), so they run on a fresh clone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from simsearch.common.errors import ConfigError, ModelWeightsMissing
from simsearch.models.device import resolve_placement
from simsearch.models.engine import Engine, preprocess
from simsearch.models.registry import get_spec, load_model
from tests.support.photos import cpu_engine, load_sample, sample_rows


@pytest.fixture(scope="module")
def engine() -> Engine:
    return cpu_engine("efficientnet-lite0")


def test_preprocess_gives_a_centre_crop_of_uint8(engine: Engine) -> None:
    from PIL import Image

    wide = Image.new("RGB", (640, 320), (10, 20, 30))
    array = preprocess(wide, engine.spec.preprocessing)
    assert array.shape == (224, 224, 3)
    assert array.dtype == np.uint8
    assert tuple(array[112, 112]) == (10, 20, 30)
    tiny = preprocess(Image.new("RGB", (1, 1), (255, 0, 0)), engine.spec.preprocessing)
    assert tiny.shape == (224, 224, 3)


def test_vectors_are_unit_length_float32_of_the_declared_dim(engine: Engine) -> None:
    rows = sample_rows()[:3]
    vectors = engine.embed([load_sample(r["path"], engine) for r in rows])
    assert vectors.shape == (3, 1280)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_batch_composition_does_not_change_a_vector(engine: Engine) -> None:
    rows = sample_rows()
    images = [load_sample(rows[i]["path"], engine) for i in range(0, 500, 50)]
    alone = engine.embed([images[0]])[0]
    for size in (2, 3, 8, len(images)):
        batch = engine.embed(images[:size])
        assert np.abs(batch[0] - alone).max() < 1e-5, f"batch of {size}"
    shuffled = engine.embed(images[::-1])
    assert np.abs(shuffled[-1] - alone).max() < 1e-5


def test_pretrained_features_group_the_shipped_photos_by_class(engine: Engine) -> None:
    """A small real-data check: 20 photos per class, leave-one-out precision@5."""
    rows = [r for i, r in enumerate(sample_rows()) if i % 5 == 0]
    labels = np.array([r["label"] for r in rows])
    arrays = [load_sample(r["path"], engine) for r in rows]
    vectors = np.concatenate([engine.embed(arrays[i : i + 16]) for i in range(0, len(arrays), 16)])
    scores = vectors @ vectors.T
    np.fill_diagonal(scores, -np.inf)
    top = np.argsort(-scores, axis=1)[:, :5]
    precision = (labels[top] == labels[:, None]).mean()
    assert precision >= 0.6, precision  # chance is 19/99 = 0.19; measured 0.69


def test_missing_resnet50_weights_say_how_to_provide_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ModelWeightsMissing) as caught:
        load_model(get_spec("resnet50"), None)
    assert "SIMSEARCH_WEIGHTS" in caught.value.reason
    assert "resnet50-11ad3fa6.pth" in caught.value.reason
    with pytest.raises(ModelWeightsMissing, match="does not exist"):
        load_model(get_spec("resnet50"), str(tmp_path / "nope.pth"))


def test_weights_load_from_a_file_and_from_torch_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = get_spec("resnet18")
    random_module, label = load_model(spec, "random")
    assert label == "random"
    state = random_module.get_submodule("backbone").state_dict()
    with torch.no_grad():
        state["conv1.weight"].add_(1.0)  # make the file distinguishable from the seed
    path = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    loaded, label = load_model(spec, str(path))
    assert label == str(path)
    assert torch.equal(loaded.get_parameter("backbone.conv1.weight"), state["conv1.weight"])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    _, label = load_model(spec, None)
    assert label == str(path)


def test_weights_that_do_not_fit_the_architecture_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "wrong.pth"
    torch.save({"something.else": torch.zeros(1)}, path)
    with pytest.raises(ModelWeightsMissing, match="does not fit"):
        load_model(get_spec("resnet18"), str(path))


def test_unknown_model_and_unavailable_device_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="choose one of"):
        get_spec("vgg-nope")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_placement("cuda", "auto")
