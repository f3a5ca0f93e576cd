"""Stage 2 of a build: keys → vectors, in-process (small jobs) or through the embedder.

Both backends answer the same question for a chunk of keys: which vectors, and which keys
were refused and why. A refused image (corrupt, not an image, too large) is reported and
skipped; it never fails the build.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import httpx
import numpy as np

from simsearch.common.errors import ConfigError, Forbidden, SimsearchError, StorageError
from simsearch.common.imaging import DecodeLimits, decode_image
from simsearch.common.manifest import ModelInfo
from simsearch.common.storage import ObjectStore
from simsearch.common.telemetry import outgoing_headers
from simsearch.common.wire import EmbedderInfo, EmbedResponse, decode_vectors
from simsearch.models import DEFAULT_MODEL

log = logging.getLogger(__name__)

Chunk = tuple[list[str], np.ndarray, dict[str, str]]  # embedded keys, their vectors, refusals


class EmbedBackend(Protocol):
    """Something that turns object keys into vectors of one model."""

    model: ModelInfo

    def embed(self, keys: list[str]) -> Chunk: ...


class LocalBackend:
    """The embedding engine in this process: no service needed (laptops, tests, small sets)."""

    def __init__(
        self,
        store: ObjectStore,
        model: str = DEFAULT_MODEL,
        weights: str | None = None,
        workers: int = 4,
        batch: int = 32,
    ) -> None:
        from simsearch.models.device import resolve_placement
        from simsearch.models.engine import Engine
        from simsearch.models.registry import get_spec, load_model

        spec = get_spec(model)
        module, label = load_model(spec, weights)
        self.engine = Engine(spec, module, resolve_placement("auto", "auto"), label)
        self.model = ModelInfo(
            name=spec.name, dim=spec.dim, preprocessing=spec.preprocessing.model_dump()
        )
        self.store = store
        self.limits = DecodeLimits()
        self.batch = batch
        self.pool = ThreadPoolExecutor(workers, "index-decode")

    def _prepare(self, key: str) -> np.ndarray | str:
        from simsearch.models.engine import preprocess

        try:
            data = self.store.get_limited(key, self.limits.max_bytes)
            return preprocess(decode_image(data, self.limits), self.engine.spec.preprocessing)
        except SimsearchError as err:
            return f"{err.code}: {err.reason}"

    def embed(self, keys: list[str]) -> Chunk:
        prepared = list(self.pool.map(self._prepare, keys))
        ok = [(k, a) for k, a in zip(keys, prepared, strict=True) if not isinstance(a, str)]
        failed = {k: a for k, a in zip(keys, prepared, strict=True) if isinstance(a, str)}
        arrays = [a for _, a in ok]
        parts = [
            self.engine.embed(arrays[i : i + self.batch]) for i in range(0, len(arrays), self.batch)
        ]
        vectors = np.concatenate(parts) if parts else np.zeros((0, self.model.dim), np.float32)
        return [k for k, _ in ok], vectors, failed


class RemoteBackend:
    """The embedder service (`POST /embed/keys`): it fetches the objects itself, in parallel."""

    def __init__(
        self, url: str, store: ObjectStore, timeout_s: float = 300.0, attempts: int = 5
    ) -> None:
        self.url = url.rstrip("/")
        self.store = store
        self.attempts = attempts
        self.client = httpx.Client(timeout=timeout_s)
        info = EmbedderInfo.model_validate(self._call("GET", "/info"))
        self.model = ModelInfo(
            name=info.model, dim=info.dim, preprocessing=info.preprocessing.model_dump()
        )

    def _call(self, method: str, path: str, body: object | None = None) -> dict[str, object]:
        """One call with retries, so a restarting embedder pod does not kill the build."""
        for attempt in range(1, self.attempts + 1):
            try:
                response = self.client.request(
                    method, self.url + path, json=body, headers=outgoing_headers()
                )
                if response.status_code < 500:
                    response.raise_for_status()
                    result: dict[str, object] = response.json()
                    return result
                problem = f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.TransportError as err:
                problem = str(err)
            except httpx.HTTPStatusError as err:
                raise ConfigError(f"embedder refused {path}: {err.response.text[:300]}") from err
            log.warning("embedder %s%s failed (attempt %d): %s", self.url, path, attempt, problem)
            time.sleep(min(30.0, 0.5 * 2**attempt))
        raise StorageError(f"embedder at {self.url} failed {self.attempts} times: {problem}")

    def embed(self, keys: list[str]) -> Chunk:
        uris = [self.store.url_for(key) for key in keys]
        reply = EmbedResponse.model_validate(
            self._call("POST", "/embed/keys", {"keys": uris, "encoding": "base64"})
        )
        vectors = decode_vectors(reply.vectors_b64 or "", reply.dim)
        refused = [e for e in reply.errors if e.error == Forbidden.code]
        if keys and len(refused) == len(keys):
            # Not one image may be read: the embedder is not allowed the images root, a
            # deployment mistake. Recording it would mark every image failed; stop instead.
            # (A few refusals, e.g. a symlink out of the root, are per-image failures.)
            raise ConfigError(
                f"the embedder at {self.url} may not read {refused[0].key}: "
                f"{refused[0].detail}; add the images root ({self.store.uri}) to its "
                "SIMSEARCH_ALLOWED_ROOTS"
            )
        failed = {keys[e.index]: f"{e.error}: {e.detail}" for e in reply.errors}
        ok = [i for i, key in enumerate(keys) if key not in failed]
        return [keys[i] for i in ok], vectors[ok], failed
