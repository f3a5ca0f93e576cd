"""The embedder's settings (`SIMSEARCH_*`), validated when the service starts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import Field, field_validator, model_validator

from simsearch.common.confinement import AllowedRoots, Root, parse_root, parse_roots
from simsearch.common.errors import ConfigError
from simsearch.common.settings import ServiceSettings
from simsearch.models import DEFAULT_MODEL

ALLOWED_ROOTS_VAR = "SIMSEARCH_ALLOWED_ROOTS"


class EmbedderSettings(ServiceSettings):
    """Model, device and batching knobs. Defaults suit a CPU laptop; the chart sets GPU ones."""

    port: int = Field(8001, ge=1, le=65535)
    model: str = Field(DEFAULT_MODEL, description="Registry name (see `GET /info`).")
    weights: str | None = Field(
        None, description="Path, s3:// or file:// URI of a .pth file, or 'random' (tests)."
    )
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N | mps")
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    channels_last: bool | None = Field(
        None, description="NHWC memory format; default: on (faster on both CPU and CUDA)."
    )
    torch_threads: int = Field(0, ge=0, le=256, description="Intra-op threads; 0 = torch's.")
    max_batch: int | None = Field(
        None, ge=1, le=1024, description="Images per forward pass; default 8 on CPU, 128 on GPU."
    )
    max_wait_ms: float = Field(
        20.0, ge=0, le=1000, description="Longest wait for images still decoding to join a batch."
    )
    queue_limit: int = Field(1024, ge=1, le=100_000)
    decode_workers: int = Field(2, ge=1, le=256)
    fetch_workers: int = Field(16, ge=1, le=256)
    max_image_bytes: int = Field(20 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(40_000_000, ge=1, le=80_000_000)
    max_request_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="Whole body limit.")
    max_files: int = Field(256, ge=1, le=10_000, description="Files or keys per request.")
    store: str | None = Field(None, description="Root URI that /embed/keys keys are under.")
    allowed_roots: str | None = Field(
        None,
        description="Comma-separated root URIs /embed/keys may read under; "
        "default: SIMSEARCH_STORE (none without it).",
    )
    warmup: bool = True

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        kind = value.split(":", 1)[0]
        if kind not in {"auto", "cpu", "cuda", "mps"}:
            raise ValueError("must be auto, cpu, cuda, cuda:N or mps")
        return value

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        from simsearch.models.registry import REGISTRY

        if value not in REGISTRY:
            raise ValueError(f"unknown model; choose one of {', '.join(sorted(REGISTRY))}")
        return value

    @field_validator("store")
    @classmethod
    def _store_is_a_root(cls, value: str | None) -> str | None:
        if value is not None:
            _as_value_error(lambda: parse_root(value, relative_ok=True))
        return value

    @field_validator("allowed_roots")
    @classmethod
    def _roots_parse(cls, value: str | None) -> str | None:
        if value is not None:
            _as_value_error(lambda: parse_roots(value))
        return value

    def roots(self) -> tuple[Root, ...]:
        """What `/embed/keys` may read: `SIMSEARCH_ALLOWED_ROOTS`, else the store root.

        An explicit list replaces the default rather than adding to it, so the variable
        alone says everything the embedder can read; the start-up check below makes sure
        the store (where bare keys go) is in it.
        """
        if self.allowed_roots and self.allowed_roots.strip():
            return parse_roots(self.allowed_roots)
        store = self.store_root()
        return (store,) if store is not None else ()

    def store_root(self) -> Root | None:
        """The root bare keys are relative to, or None without `SIMSEARCH_STORE`."""
        return parse_root(self.store, relative_ok=True) if self.store is not None else None

    def confinement(self) -> AllowedRoots:
        """The fence `/embed/keys` references must pass (see `simsearch.common.confinement`)."""
        return AllowedRoots(self.roots(), ALLOWED_ROOTS_VAR)

    def batch_for(self, device_type: str) -> int:
        """`max_batch`, or the measured sweet spot for the device when unset.

        On a 2-core CPU, batches of 8 let concurrent requests decode while the model is
        idle and then run one uncontended forward pass: the service keeps ~95 % of the raw
        model throughput (docs/benchmarks.md); a GPU needs large batches to be busy.
        """
        if self.max_batch is not None:
            return self.max_batch
        return 8 if device_type == "cpu" else 128

    @model_validator(mode="after")
    def _body_fits_an_image(self) -> EmbedderSettings:
        if self.max_request_bytes < self.max_image_bytes:
            raise ValueError(
                "SIMSEARCH_MAX_REQUEST_BYTES must be >= SIMSEARCH_MAX_IMAGE_BYTES "
                f"({self.max_request_bytes} < {self.max_image_bytes})"
            )
        return self

    @model_validator(mode="after")
    def _store_inside_the_roots(self) -> EmbedderSettings:
        store = self.store_root()
        if store is not None and not any(root.contains(store) for root in self.roots()):
            raise ValueError(
                f"SIMSEARCH_STORE ({self.store}) must lie under one of {ALLOWED_ROOTS_VAR} "
                f"({self.allowed_roots}): bare keys are read from it"
            )
        return self


def _as_value_error(check: Callable[[], object]) -> None:
    """Run a parser; its `ConfigError` becomes the ValueError pydantic reports per field."""
    try:
        check()
    except ConfigError as err:
        raise ValueError(err.reason) from None
