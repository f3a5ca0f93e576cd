"""The embedder's HTTP API (FastAPI). Routes stay thin; the work is in `service.py`.

POST /embed          multipart, one or many parts named `file`/`files` → vectors
POST /embed/keys     {"keys": [...]} object keys or URIs the embedder fetches itself
GET  /info           model, dim, device, preprocessing, batching settings
GET  /health/live    the process answers
GET  /health/ready   the model is loaded and warmed up
GET  /metrics        Prometheus
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated

import numpy as np
import torch
from fastapi import Depends, FastAPI, Query, Request
from prometheus_client import CollectorRegistry

import simsearch
from simsearch.common.apidoc import binary_part, error_responses, multipart_body
from simsearch.common.errors import InvalidParameter
from simsearch.common.http import (
    RequestContextMiddleware,
    health_router,
    install_error_handlers,
    metrics_router,
    read_file_parts,
)
from simsearch.common.telemetry import HttpMetrics
from simsearch.common.wire import (
    EmbedderInfo,
    EmbedKeysRequest,
    EmbedResponse,
    VectorEncoding,
    encode_vectors,
)
from simsearch.embedder.service import EmbedderMetrics, EmbedderService
from simsearch.embedder.settings import EmbedderSettings
from simsearch.models.device import resolve_placement
from simsearch.models.engine import Engine
from simsearch.models.registry import get_spec, load_model

log = logging.getLogger(__name__)


def build_engine(settings: EmbedderSettings) -> Engine:
    """Load the model on its device; raises ConfigError/ModelWeightsMissing at start-up."""
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    spec = get_spec(settings.model)
    placement = resolve_placement(settings.device, settings.precision, settings.channels_last)
    module, weights = load_model(spec, settings.weights, settings.s3_options())
    log.info(
        "model ready on %s",
        placement.device,
        extra={"model": spec.name, "precision": placement.precision, "weights": weights},
    )
    return Engine(spec, module, placement, weights)


async def get_service(request: Request) -> EmbedderService:
    """The service created in the lifespan (injected, never a module global)."""
    service: EmbedderService = request.app.state.service
    return service


ServiceDep = Annotated[EmbedderService, Depends(get_service)]


def respond(
    service: EmbedderService,
    vectors: np.ndarray,
    encoding: VectorEncoding,
    ok: list[bool] | None = None,
) -> EmbedResponse:
    """Vectors in the requested encoding (JSON lists, or base64 float32 rows)."""
    response = EmbedResponse(
        model=service.engine.spec.name,
        dim=service.engine.dim,
        count=len(vectors),
        encoding=encoding,
    )
    if encoding == "base64":
        response.vectors_b64 = encode_vectors(vectors)
    else:
        response.vectors = [
            row.tolist() if ok is None or ok[i] else None for i, row in enumerate(vectors)
        ]
    return response


async def read_uploads(request: Request, max_files: int) -> list[bytes]:
    """The bytes of every file part (`file` or `files`), in order; 4xx when there is none."""
    return await read_file_parts(request, ("file", "files"), max_files, max_fields=max_files)


# `file` is declared as one binary part, repeated for many: on the wire one part and a
# one-item array are the same bytes, so an array schema would call valid requests invalid.
_EMBED_BODY = multipart_body(
    {"file": binary_part("An image (JPEG, PNG, WebP, GIF, BMP, TIFF).")},
    description="One or more file parts named `file` (repeat the part for several images; "
    "`files` is accepted too), at most SIMSEARCH_MAX_FILES; vectors come back in part order.",
)


def create_app(settings: EmbedderSettings, engine: Engine | None = None) -> FastAPI:
    """The embedder app; `engine` may be passed in (tests, benchmarks) to skip loading."""
    registry = CollectorRegistry()
    http_metrics = HttpMetrics("embedder", registry)
    lifespan = _lifespan(settings, engine, EmbedderMetrics(registry))
    app = FastAPI(title="simsearch embedder", version=simsearch.__version__, lifespan=lifespan)
    app.add_middleware(
        RequestContextMiddleware, metrics=http_metrics, max_body_bytes=settings.max_request_bytes
    )
    install_error_handlers(app)
    app.include_router(health_router(_readiness(app, settings)))
    app.include_router(metrics_router(http_metrics))
    _add_embed_routes(app, settings)
    _add_info_route(app, settings)
    return app


def _lifespan(
    settings: EmbedderSettings, engine: Engine | None, metrics: EmbedderMetrics
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Start-up loads the model (unless given) and starts the batcher; shut-down stops it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = EmbedderService(settings, engine or build_engine(settings), metrics)
        app.state.service = service
        await service.start()
        log.info("embedder ready", extra={"model": settings.model, "port": settings.port})
        yield
        await service.stop()

    return lifespan


def _readiness(app: FastAPI, settings: EmbedderSettings) -> Callable[[], tuple[bool, str]]:
    """Ready once the lifespan's service has loaded and warmed up the model."""

    def readiness() -> tuple[bool, str]:
        service = getattr(app.state, "service", None)
        if service is None or not service.ready:
            return False, "model loading or warming up"
        return True, f"{settings.model} on {service.engine.placement.device}"

    return readiness


def _add_embed_routes(app: FastAPI, settings: EmbedderSettings) -> None:
    """`POST /embed` (uploads) and `POST /embed/keys` (objects the embedder fetches)."""

    @app.post(
        "/embed",
        response_model=EmbedResponse,
        response_model_exclude_none=True,
        openapi_extra=_EMBED_BODY,
        responses=error_responses(400, 413, 415, 422, 503),
    )
    async def embed(
        request: Request, service: ServiceDep, encoding: Annotated[VectorEncoding, Query()] = "json"
    ) -> EmbedResponse:
        """Embed uploaded images (all must decode, or the request fails with the reason)."""
        blobs = await read_uploads(request, settings.max_files)
        return respond(service, await service.embed_many(blobs), encoding)

    @app.post(
        "/embed/keys",
        response_model=EmbedResponse,
        response_model_exclude_none=True,
        responses=error_responses(400, 422, 503),
    )
    async def embed_keys(body: EmbedKeysRequest, service: ServiceDep) -> EmbedResponse:
        """Embed objects the embedder fetches itself; failed keys are listed in `errors`."""
        if len(body.keys) > settings.max_files:
            raise InvalidParameter(f"{len(body.keys)} keys; at most {settings.max_files} per call")
        result = await service.embed_keys(body.keys)
        response = respond(service, result.vectors, body.encoding, result.ok)
        response.errors = result.errors
        return response


def _add_info_route(app: FastAPI, settings: EmbedderSettings) -> None:
    """`GET /info`: the model and batching this embedder runs."""

    @app.get("/info", response_model=EmbedderInfo)
    async def info(service: ServiceDep) -> EmbedderInfo:
        """What model this is: the indexer records it in the index manifest."""
        engine = service.engine
        return EmbedderInfo(
            model=engine.spec.name,
            dim=engine.dim,
            weights=engine.weights,
            device=str(engine.placement.device),
            precision=engine.placement.precision,
            preprocessing=engine.spec.preprocessing,
            max_batch=service.max_batch,
            max_wait_ms=settings.max_wait_ms,
            torch_threads=torch.get_num_threads(),
            decode_workers=settings.decode_workers,
            max_image_bytes=settings.max_image_bytes,
            max_image_pixels=settings.max_image_pixels,
            version=simsearch.__version__,
        )
