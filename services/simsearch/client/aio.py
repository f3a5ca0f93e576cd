"""`AsyncClient`: `sync.Client` for asyncio (one httpx.AsyncClient), method for method.

The same `Call`s from `calls.py`, the same `retry.Attempts` loop, the same parsing; only
sending (`await http.send`) and waiting (`asyncio.sleep`) differ.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping
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
from simsearch.client.sync import CHUNK
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

__all__ = ["AsyncClient"]

T = TypeVar("T")


class AsyncClient:
    """An asyncio client for one router; see `Client` for the arguments.

    `limits` is httpx's connection pool (a load generator raises it to its concurrency).
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        limits: httpx.Limits | None = None,
    ) -> None:
        self.api_key = api_key
        self.timeouts = timeouts or Timeouts()
        self.retry = retry or RetryPolicy()
        self._http = httpx.AsyncClient(
            transport=transport,
            limits=limits or httpx.Limits(),
            **calls.http_options(base_url, headers),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ status

    async def health(self, *, request_id: str | None = None) -> HealthResponse:
        """`GET /health`; an unhealthy cluster's 503 is returned, not raised."""
        return await self._run(calls.health(), request_id)

    async def live(self, *, request_id: str | None = None) -> bool:
        """`GET /health/live`: True when the process answers (else `ConnectionFailed`)."""
        return await self._run(calls.live(), request_id)

    async def ready(self, *, request_id: str | None = None) -> ReadyBody:
        """`GET /health/ready`; "not_ready" (503) is returned with its reason, not raised."""
        return await self._run(calls.ready(), request_id)

    async def stats(self, *, request_id: str | None = None) -> StatsResponse:
        """`GET /stats`: totals, the index version, every shard."""
        return await self._run(calls.stats(), request_id)

    async def metrics(self, *, request_id: str | None = None) -> str:
        """`GET /metrics`: the Prometheus text."""
        return await self._run(calls.metrics(), request_id)

    # ------------------------------------------------------------------ collections

    async def collections(self, *, request_id: str | None = None) -> CollectionList:
        """`GET /collections`: every collection some healthy shard serves, and the default."""
        return await self._run(calls.collections(), request_id)

    async def collection(self, name: str, *, request_id: str | None = None) -> CollectionDetail:
        """`GET /collections/{name}`: its summary, metadata fields and versions."""
        return await self._run(calls.collection(name), request_id)

    # ------------------------------------------------------------------ search

    @overload
    async def search_vector(
        self, vector: VectorLike, *, k: int | None = None, nprobe: int | None = None,
        refine: int | None = None, strict: bool = False, collection: str | None = None,
        filter: FilterInput | None = None, request_id: str | None = None,
    ) -> SearchResponse: ...  # fmt: skip

    @overload
    async def search_vector(
        self, *, vectors: MatrixLike, k: int | None = None, nprobe: int | None = None,
        refine: int | None = None, strict: bool = False, collection: str | None = None,
        filter: FilterInput | None = None, request_id: str | None = None,
    ) -> BatchSearchResponse: ...  # fmt: skip

    async def search_vector(
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
        """`POST /search/vector`: one `vector`, or a batch of `vectors` (one list each);
        `collection` and `filter` as in `Client.search_vector`."""
        knobs = Knobs.of(k, nprobe, refine, strict, collection, filter)
        call: Call[Any] = calls.search_vector(vector, vectors, knobs)
        answer: SearchResponse | BatchSearchResponse = await self._run(call, request_id)
        return answer

    async def search_image(
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
        """`POST /search/image`: bytes, a path or an open binary file, embedded then searched."""
        knobs = Knobs.of(k, nprobe, refine, strict, collection, filter)
        call = calls.search_image(image, filename, knobs)
        return await self._run(call, request_id)

    async def search_similar(
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
        """`GET /search/similar/{id}`: the indexed image itself ranks first."""
        knobs = Knobs.of(k, nprobe, refine, strict, collection, filter)
        call = calls.search_similar(id, knobs)
        return await self._run(call, request_id)

    # ------------------------------------------------------------------ images

    async def image(
        self,
        id: int,
        *,
        collection: str | None = None,
        chunk_size: int = CHUNK,
        request_id: str | None = None,
    ) -> AsyncIterator[bytes]:
        """`GET /images/{id}` (or its collection's) as chunks (`async for`); see `Client.image`."""
        response = await self._open(calls.image(id, collection), request_id)
        try:
            async for chunk in self._chunks(response, chunk_size):
                yield chunk
        finally:
            await response.aclose()

    async def save_image(
        self,
        id: int,
        path: str | os.PathLike[str],
        *,
        collection: str | None = None,
        request_id: str | None = None,
    ) -> int:
        """Download image `id` (of `collection`) to `path` (via a temporary file); the bytes
        written."""
        with Download(Path(path)) as download:
            async for chunk in self.image(id, collection=collection, request_id=request_id):
                download.write(chunk)
        return download.size

    # ------------------------------------------------------------------ admin

    async def reload(
        self, *, timeout_s: float = 30.0, request_id: str | None = None
    ) -> ReloadResponse:
        """`POST /admin/reload` (an admin key): every shard polls CURRENT now."""
        return await self._run(calls.reload(timeout_s), request_id)

    # ------------------------------------------------------------------ the loop

    async def _run(self, call: Call[T], request_id: str | None) -> T:
        response = await self._send(call, request_id, stream=False)
        return calls.answer(call, response)

    async def _send(
        self, call: Call[Any], request_id: str | None, *, stream: bool
    ) -> httpx.Response:
        timeouts = call.timeouts(self.timeouts)
        attempts = Attempts(self.retry, timeouts.deadline_s)
        while True:
            try:
                timeout = timeouts.within(attempts.start())
                return await self._attempt(call, request_id, timeout, stream)
            except ClientError as error:
                await asyncio.sleep(attempts.wait_after(error))

    async def _attempt(
        self, call: Call[Any], request_id: str | None, timeout: httpx.Timeout, stream: bool
    ) -> httpx.Response:
        request = calls.build(self._http, call, self.api_key, request_id, timeout)
        try:
            response = await self._http.send(request, stream=stream)
            if stream and response.status_code not in call.ok:
                await response.aread()  # the error body, then the connection goes back
                await response.aclose()
        except httpx.HTTPError as exc:
            raise translate(exc) from exc
        return calls.checked(call, response)

    async def _open(self, call: Call[Any], request_id: str | None) -> httpx.Response:
        response = await self._send(call, request_id, stream=True)
        location = calls.redirect_location(response)
        if location is None:
            return response
        await response.aclose()
        return await self._send(calls.redirected(location), request_id, stream=True)

    @staticmethod
    async def _chunks(response: httpx.Response, chunk_size: int) -> AsyncIterator[bytes]:
        try:
            async for chunk in response.aiter_bytes(chunk_size):
                yield chunk
        except httpx.HTTPError as exc:
            raise translate(exc) from exc
