"""The embedder's work, independent of HTTP: decode → preprocess → batch → vectors.

Decoding and preprocessing run in a thread pool (Pillow releases the GIL), in parallel
with the model, which runs batches in its own thread via the micro-batcher. Object-store
fetches for `/embed/keys` run in a third pool, since they wait on the network.

`/embed/keys` reads what callers name, so every reference first passes the allowed-roots
fence (`simsearch.common.confinement`, `SIMSEARCH_ALLOWED_ROOTS`): nothing outside the roots
is opened, and inside them only regular files are read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from simsearch.common.confinement import Target
from simsearch.common.errors import Forbidden, InvalidParameter, SimsearchError
from simsearch.common.http import status_for
from simsearch.common.imaging import DecodeLimits, decode_image
from simsearch.common.storage import FileStore, ObjectStore, is_uri, open_store
from simsearch.common.telemetry import run_in_context
from simsearch.common.wire import ItemError
from simsearch.embedder.batcher import MicroBatcher
from simsearch.embedder.settings import EmbedderSettings
from simsearch.models.engine import Engine, preprocess

log = logging.getLogger(__name__)


class EmbedderMetrics:
    """What an operator needs to size the embedder: batch sizes, latency, images/s."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.images = Counter(
            "simsearch_embedder_images", "Images embedded (rate() = images/s).", registry=registry
        )
        self.rejected = Counter(
            "simsearch_embedder_rejected_images",
            "Images refused, by reason.",
            ["error"],
            registry=registry,
        )
        self.batch_size = Histogram(
            "simsearch_embedder_batch_size",
            "Images per forward pass.",
            registry=registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
        )
        self.inference = Histogram(
            "simsearch_embedder_inference_seconds",
            "Time of one forward pass.",
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.decode = Histogram(
            "simsearch_embedder_decode_seconds",
            "Decode + preprocess time of one image.",
            registry=registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
        )
        self.queue_depth = Gauge(
            "simsearch_embedder_queue_depth", "Images waiting for the model.", registry=registry
        )

    def observe_batch(self, size: int, seconds: float) -> None:
        """Called by the batcher after every forward pass."""
        self.batch_size.observe(size)
        self.inference.observe(seconds)
        self.images.inc(size)


@dataclass
class KeyResult:
    """Vectors for a list of keys: rows aligned with the keys, failed ones flagged.

    Each failure's `ItemError.status` is the HTTP status the edge gives that error
    (`simsearch.common.http.status_for`), as if the key had been requested alone.
    """

    vectors: np.ndarray
    ok: list[bool]
    errors: list[ItemError]


class EmbedderService:
    """Owns the engine, the batcher and the thread pools for one running service."""

    def __init__(self, settings: EmbedderSettings, engine: Engine, metrics: EmbedderMetrics):
        self.settings = settings
        self.engine = engine
        self.metrics = metrics
        self.limits = DecodeLimits(settings.max_image_bytes, settings.max_image_pixels)
        self.max_batch = settings.batch_for(engine.placement.device.type)
        self.batcher: MicroBatcher[np.ndarray, np.ndarray] = MicroBatcher(
            self._embed_batch,
            self.max_batch,
            settings.max_wait_ms / 1000,
            settings.queue_limit,
            metrics.observe_batch,
        )
        self._decode_pool = ThreadPoolExecutor(settings.decode_workers, "decode")
        self._fetch_pool = ThreadPoolExecutor(settings.fetch_workers, "fetch")
        self._stores: dict[str, ObjectStore] = {}
        self.fence = settings.confinement()
        self._store_root = settings.store_root()
        self.ready = False

    async def start(self) -> None:
        """Start batching, then warm the model up in the background (ready afterwards)."""
        await self.batcher.start()
        if self.settings.warmup:
            sizes = sorted({1, self.max_batch})
            await asyncio.get_running_loop().run_in_executor(None, self.engine.warm_up, sizes)
        self.ready = True

    async def stop(self) -> None:
        """Fail queued work and release the threads."""
        self.ready = False
        await self.batcher.stop()
        self._decode_pool.shutdown(wait=False, cancel_futures=True)
        self._fetch_pool.shutdown(wait=False, cancel_futures=True)

    def _embed_batch(self, items: Sequence[np.ndarray]) -> list[np.ndarray]:
        self.metrics.queue_depth.set(self.batcher.depth)
        return list(self.engine.embed(items))

    def _prepare(self, data: bytes) -> np.ndarray:
        started = time.perf_counter()
        try:
            image = decode_image(data, self.limits)
        except SimsearchError as err:
            self.metrics.rejected.labels(err.code).inc()
            raise
        array = preprocess(image, self.engine.spec.preprocessing)
        self.metrics.decode.observe(time.perf_counter() - started)
        return array

    async def embed_one(self, data: bytes) -> np.ndarray:
        """Decode, preprocess and embed one image; errors are the caller's 4xx."""
        loop = asyncio.get_running_loop()
        with self.batcher.expect():
            array = await loop.run_in_executor(
                self._decode_pool, run_in_context(self._prepare), data
            )
            future = self.batcher.enqueue(array)
        return await future

    async def embed_many(self, blobs: Sequence[bytes]) -> np.ndarray:
        """All-or-nothing: the first bad image fails the request, naming its position."""
        tasks = [asyncio.ensure_future(self.embed_one(blob)) for blob in blobs]
        try:
            for index, task in enumerate(tasks):
                try:
                    await task
                except SimsearchError as err:
                    err.reason = f"file #{index}: {err.reason}"
                    raise
        finally:
            for task in tasks:
                task.cancel()
        return np.stack([task.result() for task in tasks])

    def _locate(self, ref: str) -> Target:
        """Where `ref` is read, if it is under an allowed root; `Forbidden` otherwise."""
        if is_uri(ref):
            return self.fence.locate(ref)
        if self._store_root is None:
            raise InvalidParameter(
                f"{ref!r} is a bare key but the embedder has no SIMSEARCH_STORE; send a full URI"
            )
        return self.fence.locate_key(self._store_root, ref)

    def _store_for(self, target: Target) -> ObjectStore:
        """One store per root, shared by the fetch threads (clients pool connections)."""
        store = self._stores.get(target.store_uri)
        if store is None:
            if target.local_root is not None:  # resolved by the fence: follow no more links
                store = FileStore(target.local_root, follow_symlinks=False)
            else:
                store = open_store(target.store_uri, self.settings.s3_options())
            store = self._stores.setdefault(target.store_uri, store)
        return store

    def _fetch_and_prepare(self, ref: str) -> np.ndarray:
        try:
            target = self._locate(ref)
        except Forbidden as err:
            self.metrics.rejected.labels(err.code).inc()
            log.warning("refused %.300s: %s", ref, err.reason, extra={"error": err.code})
            raise
        data = self._store_for(target).get_limited(target.key, self.settings.max_image_bytes)
        return self._prepare(data)

    async def embed_keys(self, keys: Sequence[str]) -> KeyResult:
        """Fetch, decode and embed each key; a failing key is reported, not fatal."""
        loop = asyncio.get_running_loop()
        fetch = run_in_context(self._fetch_and_prepare)

        async def one(ref: str) -> np.ndarray:
            with self.batcher.expect():
                array = await loop.run_in_executor(self._fetch_pool, fetch, ref)
                future = self.batcher.enqueue(array)
            return await future

        outcomes = await asyncio.gather(*(one(k) for k in keys), return_exceptions=True)
        vectors = np.zeros((len(keys), self.engine.dim), dtype=np.float32)
        ok, errors = [], []
        for index, (key, outcome) in enumerate(zip(keys, outcomes, strict=True)):
            if isinstance(outcome, SimsearchError):
                errors.append(
                    ItemError(
                        index=index,
                        key=key,
                        status=status_for(outcome),  # what the edge would answer
                        error=outcome.code,
                        detail=outcome.reason,
                    )
                )
                ok.append(False)
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                vectors[index] = outcome
                ok.append(True)
        return KeyResult(vectors, ok, errors)
