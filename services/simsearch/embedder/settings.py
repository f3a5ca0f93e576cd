"""The embedder's settings (`SIMSEARCH_*`), validated when the service starts."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from simsearch.common.settings import ServiceSettings


class EmbedderSettings(ServiceSettings):
    """Model, device and batching knobs. Defaults suit a CPU laptop; the chart sets GPU ones."""

    port: int = Field(8001, ge=1, le=65535)
    model: str = Field("efficientnet-lite0", description="Registry name (see `GET /info`).")
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
        from simsearch.embedder.models import REGISTRY

        if value not in REGISTRY:
            raise ValueError(f"unknown model; choose one of {', '.join(sorted(REGISTRY))}")
        return value

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
