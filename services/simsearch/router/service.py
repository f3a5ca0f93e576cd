"""The router's work behind the routes: search by vector, image or id, and image look-up.

Routes stay thin (`app.py`); everything a query does is here, in the order it happens:
pick the collection's version (routing), check the input against that version (dim, k,
the filter against its metadata schema), embed if needed (embedder), fan out and merge
(fanout), and decide whether the answer may be served (nothing answered → 503; partial →
flagged, or 503 with `strict`). A merged answer may be drawn for the live recall monitor
(`recall.py`) on its way out.

Every call takes a collection (`None`: the default one, `SIMSEARCH_INDEX`, which the old
routes serve). A collection no shard knows is a 404 naming the known ones; a known one
nobody serves right now is a 503, as before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, replace

import numpy as np
from pydantic import ValidationError

from simsearch.common.errors import (
    BadInput,
    EmptyInput,
    InvalidParameter,
    NotFound,
    PartialAnswer,
    PayloadTooLarge,
    SimsearchError,
    Unavailable,
    UpstreamError,
    UpstreamFailure,
    UpstreamRejected,
    error_for_code,
)
from simsearch.common.filters import Filter, check_filter
from simsearch.common.http import status_for
from simsearch.common.ids import MAX_ID
from simsearch.common.telemetry import run_in_context
from simsearch.common.wire import (
    EmbedResponse,
    ShardItem,
    VectorSpace,
    decode_array,
    decode_vectors,
)
from simsearch.router import catalog
from simsearch.router.coalesce import Coalescer
from simsearch.router.embedder_watch import EmbedderWatch
from simsearch.router.fanout import FanOut, FanoutResult, SearchParams
from simsearch.router.images import ImageLocator, ImageReply
from simsearch.router.metrics import RouterMetrics
from simsearch.router.query import check_k, prepare_queries
from simsearch.router.recall import RecallMonitor
from simsearch.router.registry import ShardRegistry
from simsearch.router.routing import VersionChoice, choose_version, versions
from simsearch.router.settings import RouterSettings
from simsearch.router.transport import Reply, Upstream

__all__ = ["Knobs", "RouterService", "Searched"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Searched:
    """A merged answer, the k it was asked for, and the time it took end to end
    (embedding or the item look-up included)."""

    result: FanoutResult
    k: int
    took_ms: float


@dataclass(frozen=True)
class Knobs:
    """Per-request search options: k, the index overrides, strictness and the filter."""

    k: int | None = None
    nprobe: int | None = None
    refine: int | None = None
    strict: bool = False
    filter: Filter | None = None


class RouterService:
    """One per app, created in the lifespan with the shared client and registry."""

    def __init__(
        self,
        settings: RouterSettings,
        upstream: Upstream,
        registry: ShardRegistry,
        fanout: FanOut,
        images: ImageLocator,
        metrics: RouterMetrics,
    ) -> None:
        self.settings = settings
        self.upstream = upstream
        self.registry = registry
        self.fanout = fanout
        self.coalescer = Coalescer(fanout, settings.coalesce_queries, self.version_now)
        self.images = images
        self.metrics = metrics
        self.recall = RecallMonitor(
            settings,
            fanout,
            self.version_now,
            lambda: self.registry.states.values(),
            metrics.recall,
        )
        self.embedder_watch = EmbedderWatch(
            settings.embedder_url,
            upstream,
            settings.poll_s,
            settings.info_timeout_s,
            metrics.embedder_up,
        )

    def version_now(self, collection: str, version: str) -> VersionChoice | None:
        """`version` of `collection` with the holders the registry knows now (None once
        nobody serves it): a coalesced batch that waited is planned from this, not from
        its arrival."""
        found = versions(self.registry.views(), collection)
        return next((c for c in found if c.version == version), None)

    def collection_name(self, collection: str | None) -> str:
        """The collection a request is about: the one it names, else the default."""
        return self.settings.index if collection is None else collection

    def choice(self, collection: str | None = None) -> VersionChoice:
        """The version of `collection` queries run on now; 404 for a collection no shard
        knows (with the known ones), else 503 saying why there is none."""
        name = self.collection_name(collection)
        choice = choose_version(self.registry.views(), name)
        if choice is not None:
            return choice
        states = list(self.registry.states.values())
        catalog.check_known(states, name, self.settings.index)
        down = [f"{s.url} ({s.error})" for s in states if not s.up]
        reason = "no shard serves any index version"
        if name != self.settings.index:
            reason += f" of collection {name!r}"
        if not states:
            reason += ": no shard is listed"
        elif down:
            reason += f"; down: {', '.join(down[:5])}"
        raise Unavailable(reason)

    # --- searches -----------------------------------------------------------------

    async def search_vectors(
        self, rows: list[list[float]], knobs: Knobs, collection: str | None = None
    ) -> Searched:
        """`POST /search/vector` (on `collection`, default: the default collection)."""

        async def work() -> Searched:
            return await self._search(self.choice(collection), rows, knobs)

        return await self._measured("vector", work())

    async def search_image(
        self, blob: bytes, knobs: Knobs, collection: str | None = None
    ) -> Searched:
        """`POST /search/image`: embed with the embedder, then search."""

        async def work() -> Searched:
            # Everything that can refuse the request is checked before the embedder works
            # on the image (tens of ms of its CPU): k, k·refine, that an index exists, and
            # that the filter fits it.
            self.check_k(knobs)
            choice = self.choice(collection)
            self.check_candidates(choice, knobs)
            self.check_filter(choice, knobs)
            rows = await self.embed(blob, choice)
            return await self._search(choice, rows, knobs)

        return await self._measured("image", work())

    async def search_similar(
        self, id_: int, knobs: Knobs, collection: str | None = None
    ) -> Searched:
        """`GET /search/similar/{id}`: the item's own vector as the query (it ranks first)."""

        async def work() -> Searched:
            choice = self.choice(collection)
            self.check_filter(choice, knobs)  # before the item look-up costs a shard call
            item, choice = await self.item(id_, collection, choice)
            vector = decode_array(item.vector_b64, "<f4", (item.dim or choice.dim,))
            return await self._search(choice, vector[None, :], knobs, item.space)

        return await self._measured("similar", work())

    async def _measured(self, kind: str, work: Awaitable[Searched]) -> Searched:
        """Count and time a query by kind and outcome (ok, partial, rejected, unavailable)."""
        started = time.perf_counter()
        outcome = "error"
        try:
            searched = await work
            outcome = "partial" if searched.result.partial else "ok"
            return replace(searched, took_ms=(time.perf_counter() - started) * 1000)
        except BadInput:
            outcome = "rejected"
            raise
        except SimsearchError:
            outcome = "unavailable"
            raise
        finally:
            self.metrics.queries.labels(kind, outcome).inc()
            self.metrics.latency.labels(kind).observe(time.perf_counter() - started)

    async def _search(
        self,
        choice: VersionChoice,
        rows: list[list[float]] | np.ndarray,
        knobs: Knobs,
        space: VectorSpace = "model",
    ) -> Searched:
        started = time.perf_counter()
        k = self.check_k(knobs)
        dim = choice.dim if space == "model" else len(rows[0])
        queries = prepare_queries(rows, dim, self.settings.max_queries)
        self.check_filter(choice, knobs)
        params = SearchParams(k, knobs.nprobe, knobs.refine, space, knobs.filter)
        self.check_candidates(choice, knobs)
        result = await self.coalescer.search(
            choice, queries, params, self.settings.timeout_ms / 1000
        )
        self.metrics.coverage.set(result.coverage)
        if not result.answered:
            reasons = "; ".join(f"{f.url}: {f.reason}" for f in result.failures[:5])
            raise Unavailable(f"no shard answered for index version {choice.version}: {reasons}")
        self.recall.offer(choice.collection, result, queries, params)  # ~free unless drawn
        if result.partial:
            self.metrics.partial.inc()
            if knobs.strict:
                raise PartialAnswer(
                    f"only {len(result.answered)} of {result.partitions} partitions answered "
                    f"(coverage {result.coverage:.3f}); strict=true refuses partial answers"
                )
        return Searched(result, k, (time.perf_counter() - started) * 1000)

    def check_k(self, knobs: Knobs) -> int:
        """The k to use (the default when unset); 400 when out of 1..max_k."""
        return check_k(knobs.k, self.settings.default_k, self.settings.max_k)

    def check_candidates(self, choice: VersionChoice, knobs: Knobs) -> None:
        """400 when k·refine (refine: the request's, else the version's) is over the
        shards' candidate limit."""
        k = self.check_k(knobs)
        refine = knobs.refine or choice.refine
        if k * refine > self.settings.max_candidates:
            raise InvalidParameter(
                f"k·refine = {k}·{refine} is over the limit of "
                f"{self.settings.max_candidates} candidates per query"
            )

    def check_filter(self, choice: VersionChoice, knobs: Knobs) -> None:
        """400 when the filter does not fit the version's metadata schema or is too large
        (checked here, so a bad filter never reaches a shard); nothing without a filter."""
        if knobs.filter is not None:
            check_filter(knobs.filter, choice.metadata)

    # --- the embedder ---------------------------------------------------------------

    async def embed(self, blob: bytes, choice: VersionChoice) -> np.ndarray:
        """One image's vector from the embedder; its 4xx reasons reach the caller as they are."""
        url = self.settings.embedder_url
        if not url:
            raise Unavailable("image search needs an embedder: set SIMSEARCH_EMBEDDER_URL")
        if not blob:
            raise EmptyInput("the uploaded file is empty")
        if len(blob) > self.settings.max_upload_bytes:
            raise PayloadTooLarge(
                f"the file has {len(blob)} bytes, over the limit of "
                f"{self.settings.max_upload_bytes}"
            )
        try:
            reply = await self.upstream.post_file(
                f"{url}/embed", "file", blob, self.settings.embed_timeout_s, {"encoding": "base64"}
            )
        except UpstreamFailure as exc:
            self.embedder_watch.observe(False, exc.reason)
            raise Unavailable(f"the embedder at {url} did not answer: {exc.reason}") from exc
        self.embedder_watch.observe(reply.status < 500, f"HTTP {reply.status}")
        if 400 <= reply.status < 500:
            raise embedder_refusal(reply)
        if not reply.ok:
            raise UpstreamError(f"the embedder answered {reply.status}: {reply.detail()}")
        try:
            body = EmbedResponse.model_validate_json(reply.body)
            vectors = decode_vectors(body.vectors_b64 or "", body.dim)
        except (ValidationError, SimsearchError) as exc:
            raise UpstreamError(f"the embedder's answer is unusable: {exc}") from exc
        if body.dim != choice.dim or body.model != choice.model:
            raise Unavailable(
                f"the embedder runs {body.model} ({body.dim}-d) but index version "
                f"{choice.version} was built with {choice.model} ({choice.dim}-d): their "
                "vectors are not comparable; point SIMSEARCH_EMBEDDER_URL at the same model"
            )
        return vectors

    # --- items and images --------------------------------------------------------------

    async def item(
        self, id_: int, collection: str | None = None, choice: VersionChoice | None = None
    ) -> tuple[ShardItem, VersionChoice]:
        """The indexed item `id_` of `collection` (in `choice`, else the version queries
        use now) from a shard holding its partition (id mod P)."""
        if not 0 <= id_ <= MAX_ID:
            raise NotFound(f"no image with id {id_}: ids are 0..{MAX_ID}")
        choice = choice or self.choice(collection)
        partition = id_ % choice.partitions
        holders = choice.holders_of(partition)
        if not holders:
            raise Unavailable(
                f"partition {partition} of version {choice.version} (where id {id_} would be) "
                "is not served by any shard that is up"
            )
        errors: list[str] = []
        params = {"version": choice.version, "collection": choice.collection}
        for url in holders:
            try:
                reply = await self.upstream.get(
                    f"{url}/items/{id_}", self.settings.timeout_ms / 1000, params
                )
            except UpstreamFailure as exc:
                if exc.unreachable:
                    self.registry.mark_down(url, exc.reason)
                errors.append(f"{url}: {exc.reason}")
                continue
            if reply.status == 404 and reply.error_code() in (None, "not_found"):
                raise NotFound(f"no image with id {id_} in index version {choice.version}")
            if not reply.ok:
                errors.append(f"{url}: HTTP {reply.status}: {reply.detail()}")
                continue
            try:
                return ShardItem.model_validate_json(reply.body), choice
            except ValidationError as exc:
                errors.append(f"{url}: unusable answer: {exc}")
        raise Unavailable(f"could not read id {id_}: {'; '.join(errors)}")

    async def image(self, id_: int, collection: str | None = None) -> ImageReply:
        """The bytes of image `id_` of `collection`, or a presigned URL to redirect to."""
        item, choice = await self.item(id_, collection)
        fetch = run_in_context(self.images.fetch)
        return await asyncio.to_thread(fetch, item.path, item.version, choice.collection)


def embedder_refusal(reply: Reply) -> BadInput:
    """The embedder's 4xx as the caller's error, status, code and reason unchanged.

    Rebuilt as the tree's own class for its code (a `corrupt_image` is a `CorruptImage`), so
    the edge maps it to the same status again; a refusal the tree would answer with
    another status (a proxy's bare 429, a framework's 405, a code we do not know) keeps
    the embedder's status as data (`UpstreamRejected`).
    """
    err = error_for_code(reply.error_code(), reply.detail())
    if isinstance(err, BadInput) and status_for(err) == reply.status:
        return err
    return UpstreamRejected(reply.status, err.code, reply.detail())
