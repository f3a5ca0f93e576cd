"""Both clients against `httpx.MockTransport`, used only to inject answers and failures
(as httpx's own tests do): what a request carries, how each error answer is mapped, what
is retried and for how long, the streamed download and its redirect. The real router is
driven in tests/integration/router/test_client.py."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import simsearch.client
from simsearch.client import (
    ApiError,
    AsyncClient,
    BadRequest,
    Client,
    CollectionList,
    CollectionNotFound,
    ConnectionFailed,
    FilterTooLarge,
    Forbidden,
    InvalidFilter,
    NotFound,
    RateLimited,
    RetryPolicy,
    ServerError,
    TimedOut,
    Timeouts,
    Unauthorized,
    Unavailable,
    UnexpectedResponse,
)

Handler = Callable[[httpx.Request], httpx.Response]
FAST = RetryPolicy(attempts=4, backoff_s=0.001, max_backoff_s=0.01, max_retry_after_s=0.05)
HIT = {"rank": 1, "path": "a.jpg", "similarity_score": 0.9, "id": 7, "url": "/images/7"}
ANSWER = {
    "status": "success", "k": 1, "coverage": 1.0, "partial": False, "index_version": "v1",
    "partitions": 2, "partitions_answered": 2, "took_ms": 1.0, "results": [HIT],
}  # fmt: skip


def client(handler: Handler, **kwargs: Any) -> Client:
    kwargs.setdefault("retry", FAST)
    return Client("http://router:8000/", transport=httpx.MockTransport(handler), **kwargs)


def error(status: int, code: str, detail: str = "why", **headers: str) -> httpx.Response:
    body = {"status": "error", "error": code, "detail": detail, "request_id": "rid-1"}
    return httpx.Response(status, json=body, headers=headers)


def sequence(*answers: httpx.Response | Exception) -> tuple[Handler, list[httpx.Request]]:
    """A handler answering with `answers` in turn (the last one again), and what it saw."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers[min(len(seen), len(answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return handler, seen


def test_a_vector_search_sends_the_key_the_request_id_and_only_what_was_given() -> None:
    handler, seen = sequence(httpx.Response(200, json=ANSWER))
    with client(handler, api_key="k1") as c:
        answer = c.search_vector([1, 0.5], k=3, request_id="abc")
    assert answer.results[0].id == 7 and answer.index_version == "v1"
    request = seen[0]
    assert request.url == "http://router:8000/search/vector"  # no query string: fast path
    assert request.headers["x-api-key"] == "k1" and request.headers["x-request-id"] == "abc"
    assert json.loads(request.content) == {"vector": [1.0, 0.5], "k": 3}


def test_a_batch_and_the_knobs_of_the_other_searches() -> None:
    batch = {**ANSWER, "results": [[HIT], [HIT]]}
    handler, seen = sequence(httpx.Response(200, json=batch))
    with client(handler) as c:
        answer = c.search_vector(vectors=[[1.0, 0.0], [0.0, 1.0]], strict=True)
        assert len(answer.results) == 2 and answer.results[1][0].rank == 1
    assert seen[0].url.params["strict"] == "true" and "x-api-key" not in seen[0].headers
    handler, seen = sequence(httpx.Response(200, json=ANSWER))
    with client(handler) as c:
        c.search_similar(7, k=5, nprobe=8, refine=2)
        c.search_image(b"\xff\xd8bytes", filename="q.jpg", k=2)
    assert str(seen[0].url) == "http://router:8000/search/similar/7?k=5&nprobe=8&refine=2"
    assert seen[1].url.params["k"] == "2"
    assert b'name="file"; filename="q.jpg"' in seen[1].content
    assert b"\xff\xd8bytes" in seen[1].content


def test_neither_or_both_vector_and_vectors_is_refused_before_sending() -> None:
    handler, seen = sequence(httpx.Response(200, json=ANSWER))
    with client(handler) as c, pytest.raises(ValueError, match="exactly one of"):
        c.search_vector()  # type: ignore[call-overload]  # on purpose
    assert seen == []


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequest), (413, BadRequest), (415, BadRequest), (422, BadRequest),
        (401, Unauthorized), (403, Forbidden), (404, NotFound), (429, RateLimited),
        (500, ServerError), (502, ServerError), (503, Unavailable), (409, ApiError),
    ],
)  # fmt: skip
def test_error_answers_become_typed_errors_with_the_code_kept(
    status: int, cls: type[ApiError]
) -> None:
    handler, _ = sequence(error(status, "some_code", "the reason"))
    with client(handler, retry=RetryPolicy(attempts=1)) as c, pytest.raises(cls) as raised:
        c.stats()
    assert type(raised.value) is cls
    assert (raised.value.status, raised.value.code) == (status, "some_code")
    assert raised.value.detail == "the reason" and raised.value.request_id == "rid-1"


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (404, "collection_not_found", CollectionNotFound), (404, "not_found", NotFound),
        (400, "invalid_filter", InvalidFilter), (400, "filter_too_large", FilterTooLarge),
        (400, "invalid_parameter", BadRequest), (403, "forbidden", Forbidden),
        (400, "collection_not_found", BadRequest),  # a code under another status: the status's
        (404, "invalid_filter", NotFound),
    ],
)  # fmt: skip
def test_the_codes_with_a_class_of_their_own(status: int, code: str, cls: type[ApiError]) -> None:
    handler, seen = sequence(error(status, code, "the reason"))
    with client(handler) as c, pytest.raises(cls) as raised:
        c.search_vector([1.0], collection="flowers", filter={"field": "label", "eq": "x"})
    assert type(raised.value) is cls and raised.value.code == code and len(seen) == 1
    assert issubclass(CollectionNotFound, NotFound) and issubclass(FilterTooLarge, InvalidFilter)
    assert issubclass(InvalidFilter, BadRequest)


def test_collections_and_a_search_in_one(tmp_path: Path) -> None:
    summary = {
        "name": "flowers", "version": "v1", "vectors": 3, "partitions": 2, "dim": 4,
        "model": "m", "coverage": 1.0, "partial": False, "metadata": {"label": "string"},
    }  # fmt: skip
    listing = {"default": "default", "collections": [summary]}
    detail = {**summary, "versions": [
        {"version": "v1", "live": True, "partitions": 2, "coverage": 1.0, "vectors": 3}
    ]}  # fmt: skip
    answers = {"/collections": listing, "/collections/flowers": detail}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path in answers:
            return httpx.Response(200, json=answers[request.url.path])
        if request.url.path == "/collections/flowers/images/3":
            return httpx.Response(200, content=b"img")
        assert request.url.path == "/collections/flowers/search/similar/3", request.url
        assert json.loads(request.url.params["filter"]) == {"field": "label", "in": ["a"]}
        return httpx.Response(200, json=ANSWER)

    with client(handler) as c:
        assert c.collections() == CollectionList.model_validate(listing)
        found = c.collection("flowers")
        assert found.metadata == {"label": "string"} and found.versions[0].live
        filtered = c.search_similar(3, collection="flowers", filter={"field": "label", "in": ["a"]})
        assert filtered.k == 1
        assert c.save_image(3, tmp_path / "a.jpg", collection="flowers") == 3


def test_an_error_without_our_body_keeps_its_status_and_text() -> None:
    page = httpx.Response(502, text="<html>Bad Gateway</html>", headers={"X-Request-ID": "h"})
    handler, _ = sequence(page)
    with client(handler, retry=RetryPolicy(attempts=1)) as c, pytest.raises(ServerError) as raised:
        c.stats()
    assert raised.value.code == "http_502" and "Bad Gateway" in raised.value.detail
    assert raised.value.request_id == "h"


def test_503_and_502_are_retried_then_the_answer_comes_back() -> None:
    handler, seen = sequence(error(503, "unavailable"), error(502, "upstream_error"),
                             httpx.Response(200, json=ANSWER))  # fmt: skip
    with client(handler) as c:
        assert c.search_similar(7).k == 1
    assert len(seen) == 3


def test_other_4xx_and_500_are_never_retried() -> None:
    for status in (400, 401, 404, 500):
        handler, seen = sequence(error(status, "x"))
        with client(handler) as c, pytest.raises(ApiError):
            c.search_similar(7)
        assert len(seen) == 1, status


def test_a_429_is_retried_after_retry_after() -> None:
    handler, seen = sequence(
        error(429, "rate_limited", **{"Retry-After": "0.2"}), httpx.Response(200, json=ANSWER)
    )
    policy = RetryPolicy(max_retry_after_s=1.0)
    started = time.monotonic()
    with client(handler, retry=policy) as c:
        assert c.search_similar(7).k == 1
    assert len(seen) == 2 and time.monotonic() - started >= 0.2


def test_retries_stop_at_the_attempt_count_with_the_last_error() -> None:
    handler, seen = sequence(error(429, "rate_limited", **{"Retry-After": "1"}))
    with client(handler) as c, pytest.raises(RateLimited) as raised:
        c.search_similar(7)
    assert len(seen) == FAST.attempts and raised.value.retry_after_s == 1.0


def test_the_deadline_bounds_the_retries() -> None:
    handler, seen = sequence(error(503, "unavailable"))
    policy = RetryPolicy(attempts=1000, backoff_s=0.05, max_backoff_s=0.05)
    started = time.monotonic()
    timeouts = Timeouts(deadline_s=0.3)
    with client(handler, retry=policy, timeouts=timeouts) as c, pytest.raises(Unavailable):
        c.stats()
    assert time.monotonic() - started < 1.0 and 3 <= len(seen) < 20


def test_connection_errors_are_retried_and_never_leave_as_httpx_errors() -> None:
    refused = httpx.ConnectError("refused")
    handler, seen = sequence(refused, httpx.Response(200, json=ANSWER))
    with client(handler) as c:
        assert c.search_similar(7).k == 1
    assert len(seen) == 2
    handler, _ = sequence(refused)
    with client(handler) as c, pytest.raises(ConnectionFailed) as raised:
        c.stats()
    assert not isinstance(raised.value, httpx.HTTPError)
    handler, _ = sequence(httpx.ReadTimeout("slow"))
    with client(handler) as c, pytest.raises(TimedOut):
        c.stats()


def test_a_success_status_with_a_foreign_body_is_an_unexpected_response() -> None:
    handler, _ = sequence(httpx.Response(200, text="<html>a login page</html>"))
    with client(handler) as c, pytest.raises(UnexpectedResponse, match="StatsResponse"):
        c.stats()


def test_an_unhealthy_cluster_is_an_answer_but_a_foreign_503_is_an_error() -> None:
    health = {
        "status": "unhealthy", "detail": "no shard", "index_version": None, "coverage": 0.0,
        "partitions": None, "total_vectors": 0, "shards": {"total": 1, "up": 0, "down": 1},
        "embedder": False,
    }  # fmt: skip
    handler, seen = sequence(httpx.Response(503, json=health))
    with client(handler) as c:
        assert c.health().status == "unhealthy"
    assert len(seen) == 1  # the answer, not retried
    handler, _ = sequence(httpx.Response(503, text="maintenance"))
    with client(handler) as c, pytest.raises(Unavailable):
        c.health()


def test_an_image_is_streamed_and_a_redirect_is_followed_without_the_key(tmp_path: Path) -> None:
    data = bytes(range(256)) * 1000
    presigned = "http://store:9000/bucket/a.jpg?X-Amz-Signature=s"

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "store":
            assert "x-api-key" not in request.headers
            return httpx.Response(200, content=data)
        assert request.headers["x-api-key"] == "k1"
        if request.url.path == "/images/1":
            return httpx.Response(200, content=data)
        return httpx.Response(307, headers={"Location": presigned})

    with client(handler, api_key="k1") as c:
        assert b"".join(c.image(1, chunk_size=1000)) == data
        assert b"".join(c.image(2)) == data
        assert c.save_image(2, tmp_path / "out" / "a.jpg") == len(data)
    assert (tmp_path / "out" / "a.jpg").read_bytes() == data


def test_a_failed_download_leaves_no_file(tmp_path: Path) -> None:
    handler, _ = sequence(error(404, "not_found"))
    with client(handler) as c, pytest.raises(NotFound):
        c.save_image(3, tmp_path / "a.jpg")
    assert list(tmp_path.iterdir()) == []


def test_reload_gives_the_server_its_timeout() -> None:
    handler, seen = sequence(httpx.Response(200, json={"shards": {}}))
    with client(handler, timeouts=Timeouts(read_s=1.0, deadline_s=2.0)) as c:
        assert c.reload(timeout_s=30).shards == {}
    assert seen[0].url.params["timeout_s"] == "30"
    assert seen[0].extensions["timeout"]["read"] == pytest.approx(40.0, abs=0.5)  # 30 s + slack


def test_the_async_client_shares_the_same_behaviour(tmp_path: Path) -> None:
    async def scenario() -> None:
        handler, seen = sequence(error(503, "unavailable"), httpx.Response(200, json=ANSWER))
        transport = httpx.MockTransport(handler)
        async with AsyncClient("http://router:8000", transport=transport, retry=FAST) as c:
            answer = await c.search_vector([1.0, 0.0], k=1, request_id="r")
            assert answer.results[0].id == 7 and len(seen) == 2
            assert seen[0].headers["x-request-id"] == "r"
        handler, _ = sequence(error(404, "not_found"), httpx.Response(200, content=b"img"))
        async with AsyncClient(transport=httpx.MockTransport(handler), retry=FAST) as c:
            with pytest.raises(NotFound):
                await c.save_image(1, tmp_path / "a.jpg")
            assert await c.save_image(1, tmp_path / "a.jpg") == 3
        handler, _ = sequence(httpx.ConnectError("refused"))
        async with AsyncClient(transport=httpx.MockTransport(handler), retry=FAST) as c:
            with pytest.raises(ConnectionFailed):
                await c.stats()
        handler, seen = sequence(
            error(404, "collection_not_found"), httpx.Response(200, content=b"img")
        )
        async with AsyncClient(transport=httpx.MockTransport(handler), retry=FAST) as c:
            with pytest.raises(CollectionNotFound):
                await c.search_image(b"x", collection="nope", filter={"field": "a", "eq": 1})
            assert [b async for b in c.image(4, collection="flowers")] == [b"img"]
            with pytest.raises(ValueError):  # refused before sending
                await c.search_similar(4, filter={"field": "a"})
        assert [r.url.path for r in seen] == [
            "/collections/nope/search/image",
            "/collections/flowers/images/4",
        ]

    asyncio.run(scenario())


def test_the_package_exports_what_it_lists() -> None:
    names = set(simsearch.client.__all__)
    public = {n for n in vars(simsearch.client) if not n.startswith("_")}
    modules = {"aio", "calls", "download", "errors", "options", "retry", "sync"}
    assert public - modules == names
