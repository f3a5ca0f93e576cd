"""`Client`: the router's public API, blocking (one httpx.Client, kept-alive connections).

Every method builds its `Call` in `calls.py`, runs the retry loop of `retry.Attempts`
here, and parses the answer in `calls.py`; `aio.AsyncClient` is the same with `await`.
No httpx exception leaves a method: they become `ConnectionFailed`/`TimedOut` (no
answer) or `UnexpectedResponse`, and error statuses the typed `ApiError`s.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, overload

import httpx

from simsearch.client import calls
from simsearch.client.calls import (
    Call,
    FilterInput,
    ImageInput,
    Knobs,
    MatrixLike,
    VectorLike,
)
from simsearch.client.download import Download
from simsearch.client.errors import ClientError, translate
from simsearch.client.options import Timeouts
from simsearch.client.retry import Attempts, RetryPolicy
from simsearch.common.api import (
    BatchSearchResponse,
    CollectionDetail,
    CollectionList,
    HealthResponse,
    ReloadResponse,
    SearchResponse,
    StatsResponse,
)
from simsearch.common.apidoc import ReadyBody

__all__ = ["Client"]

T = TypeVar("T")
CHUNK = 64 * 1024


class Client:
    """A blocking client for one router (`base_url`, a path prefix allowed).

    `api_key` goes in `X-API-Key` on every call to the router (never to a presigned
    object-store URL). `transport` is httpx's, for tests that inject failures.
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.api_key = api_key
        self.timeouts = timeouts or Timeouts()
        self.retry = retry or RetryPolicy()
        self._http = httpx.Client(
            transport=transport,
            **calls.http_options(base_url, headers),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ status

    def health(self, *, request_id: str | None = None) -> HealthResponse:
        """`GET /health`; an unhealthy cluster's 503 is returned, not raised."""
        return self._run(calls.health(), request_id)

    def live(self, *, request_id: str | None = None) -> bool:
        """`GET /health/live`: True when the process answers (else `ConnectionFailed`)."""
        return self._run(calls.live(), request_id)

    def ready(self, *, request_id: str | None = None) -> ReadyBody:
        """`GET /health/ready`; "not_ready" (503) is returned with its reason, not raised."""
        return self._run(calls.ready(), request_id)

    def stats(self, *, request_id: str | None = None) -> StatsResponse:
        """`GET /stats`: totals, the index version, every shard."""
        return self._run(calls.stats(), request_id)

    def metrics(self, *, request_id: str | None = None) -> str:
        """`GET /metrics`: the Prometheus text."""
        return self._run(calls.metrics(), request_id)

    # ------------------------------------------------------------------ collections

    def collections(self, *, request_id: str | None = None) -> CollectionList:
        """`GET /collections`: every collection some healthy shard serves, and the default."""
        return self._run(calls.collections(), request_id)

    def collection(self, name: str, *, request_id: str | None = None) -> CollectionDetail:
        """`GET /collections/{name}`: its summary, metadata fields and versions
        (`CollectionNotFound` if no shard serves it)."""
        return self._run(calls.collection(name), request_id)

    # ------------------------------------------------------------------ search

    @overload
    def search_vector(
        self, vector: VectorLike, *, k: int | None = None, nprobe: int | None = None,
        refine: int | None = None, strict: bool = False, collection: str | None = None,
        filter: FilterInput | None = None, request_id: str | None = None,
    ) -> SearchResponse: ...  # fmt: skip

    @overload
    def search_vector(
        self, *, vectors: MatrixLike, k: int | None = None, nprobe: int | None = None,
        refine: int | None = None, strict: bool = False, collection: str | None = None,
        filter: FilterInput | None = None, request_id: str | None = None,
    ) -> BatchSearchResponse: ...  # fmt: skip

    def search_vector(
        self,
        vector: VectorLike | None = None,
        *,
        vectors: MatrixLike | None = None,
        k: int | None = None,
        nprobe: int | None = None,
        refine: int | None = None,
        strict: bool = False,
        collection: str | None = None,
        filter: FilterInput | None = None,
        request_id: str | None = None,
    ) -> SearchResponse | BatchSearchResponse:
        """`POST /search/vector`: one `vector`, or a batch of `vectors` (one list each).

        `collection`: a named collection's route (`/collections/{name}/search/vector`);
        None, the router's default collection. `filter`: a `Filter` or its JSON as a dict
        (validated here: a malformed one is a `ValueError` before anything is sent).
        """
        knobs = Knobs.of(k, nprobe, refine, strict, collection, filter)
        call: Call[Any] = calls.search_vector(vector, vectors, knobs)
        answer: SearchResponse | BatchSearchResponse = self._run(call, request_id)
        return answer

    def search_image(
        self,
        image: ImageInput,
        *,
        filename: str | None = None,
        k: int | None = None,
        nprobe: int | None = None,
        refine: int | None = None,
        strict: bool = False,
        collection: str | None = None,
        filter: FilterInput | None = None,
        request_id: str | None = None,
    ) -> SearchResponse:
        """`POST /search/image`: bytes, a path or an open binary file, embedded then searched
        (`collection` and `filter` as in `search_vector`; the filter goes as a form field)."""
        knobs = Knobs.of(k, nprobe, refine, strict, collection, filter)
        call = calls.search_image(image, filename, knobs)
        return self._run(call, request_id)

    def search_similar(
        self,
        id: int,
        *,
        k: int | None = None,
        nprobe: int | None = None,
        refine: int | None = None,
        strict: bool = False,
        collection: str | None = None,
        filter: FilterInput | None = None,
        request_id: str | None = None,
    ) -> SearchResponse:
        """`GET /search/similar/{id}`: the indexed image itself ranks first (if the filter
        keeps it). `id` is looked up in `collection`; `filter` as in `search_vector`."""
        knobs = Knobs.of(k, nprobe, refine, strict, collection, filter)
        return self._run(calls.search_similar(id, knobs), request_id)

    # ------------------------------------------------------------------ images

    def image(
        self,
        id: int,
        *,
        collection: str | None = None,
        chunk_size: int = CHUNK,
        request_id: str | None = None,
    ) -> Iterator[bytes]:
        """`GET /images/{id}` as chunks, a 307 to a presigned URL followed (without the key);
        `collection`: `GET /collections/{name}/images/{id}`.

        Lazy: the request goes out at the first `next()`, and errors are raised there.
        Retries cover getting the answer; a connection lost mid-download raises
        `ConnectionFailed` (the chunks already handed out cannot be taken back).
        """
        response = self._open(calls.image(id, collection), request_id)
        try:
            yield from self._chunks(response, chunk_size)
        finally:
            response.close()

    def save_image(
        self,
        id: int,
        path: str | os.PathLike[str],
        *,
        collection: str | None = None,
        request_id: str | None = None,
    ) -> int:
        """Download image `id` (of `collection`) to `path` (via a temporary file: never a
        half-written one); the bytes written."""
        with Download(Path(path)) as download:
            for chunk in self.image(id, collection=collection, request_id=request_id):
                download.write(chunk)
        return download.size

    # ------------------------------------------------------------------ admin

    def reload(self, *, timeout_s: float = 30.0, request_id: str | None = None) -> ReloadResponse:
        """`POST /admin/reload` (an admin key): every shard polls CURRENT now."""
        return self._run(calls.reload(timeout_s), request_id)

    # ------------------------------------------------------------------ the loop

    def _run(self, call: Call[T], request_id: str | None) -> T:
        response = self._send(call, request_id, stream=False)
        return calls.answer(call, response)

    def _send(self, call: Call[Any], request_id: str | None, *, stream: bool) -> httpx.Response:
        timeouts = call.timeouts(self.timeouts)
        attempts = Attempts(self.retry, timeouts.deadline_s)
        while True:
            try:
                return self._attempt(call, request_id, timeouts.within(attempts.start()), stream)
            except ClientError as error:
                time.sleep(attempts.wait_after(error))

    def _attempt(
        self, call: Call[Any], request_id: str | None, timeout: httpx.Timeout, stream: bool
    ) -> httpx.Response:
        request = calls.build(self._http, call, self.api_key, request_id, timeout)
        try:
            response = self._http.send(request, stream=stream)
            if stream and response.status_code not in call.ok:
                response.read()  # the error body, then the connection goes back to the pool
                response.close()
        except httpx.HTTPError as exc:
            raise translate(exc) from exc
        return calls.checked(call, response)

    def _open(self, call: Call[Any], request_id: str | None) -> httpx.Response:
        response = self._send(call, request_id, stream=True)
        location = calls.redirect_location(response)
        if location is None:
            return response
        response.close()
        return self._send(calls.redirected(location), request_id, stream=True)

    @staticmethod
    def _chunks(response: httpx.Response, chunk_size: int) -> Iterator[bytes]:
        try:
            yield from response.iter_bytes(chunk_size)
        except httpx.HTTPError as exc:
            raise translate(exc) from exc
