"""The requests `calls.py` builds for collections and filters: path, query string, body,
and the filter's JSON by its aliases (`{"and": [...]}`, `{"field": ..., "in": [...]}`).

Requests are built with httpx's own `build_request` (what the clients send), never sent;
tests/unit/client/test_client.py drives both clients over a mock transport, and
tests/integration/router/test_client.py the real router.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

import httpx
import pydantic
import pytest

from simsearch.client import calls
from simsearch.client.calls import Call, Knobs
from simsearch.common.filters import And, Bounds, Eq, In, Not, Or, Prefix, Range

FILTER = {
    "and": [
        {"field": "label", "in": ["tulips", "roses"]},
        {"not": {"field": "size", "range": {"gte": 10000}}},
        {"or": [{"field": "key", "prefix": "photos/2024/"}, {"field": "ok", "eq": True}]},
    ]
}
# what goes on the wire: the aliases, no null bounds, numbers as the model holds them
WIRE = {
    "and": [
        {"field": "label", "in": ["tulips", "roses"]},
        {"not": {"field": "size", "range": {"gte": 10000.0}}},
        {"or": [{"field": "key", "prefix": "photos/2024/"}, {"field": "ok", "eq": True}]},
    ]
}


def request(call: Call[Any]) -> httpx.Request:
    with httpx.Client(**calls.http_options("http://router:8000/api/", None)) as http:
        built = calls.build(http, call, "k1", "rid", httpx.Timeout(1.0))
    built.read()  # a multipart body is a stream until read
    return built


def knobs(**given: Any) -> Knobs:
    args = {"k": None, "nprobe": None, "refine": None, "strict": False}
    return Knobs.of(**{**args, "collection": None, "filter": None, **given})


def multipart_fields(req: httpx.Request) -> dict[str, bytes]:
    """name -> value of each part of a multipart body (enough for these small bodies)."""
    boundary = req.headers["content-type"].split("boundary=")[1].encode()
    fields = {}
    for part in req.content.split(b"--" + boundary)[1:-1]:
        head, _, value = part.strip(b"\r\n").partition(b"\r\n\r\n")
        name = head.split(b'name="')[1].split(b'"')[0].decode()
        fields[name] = value
    return fields


def test_the_collection_routes() -> None:
    assert request(calls.collections()).url == "http://router:8000/api/collections"
    detail = request(calls.collection("flowers"))
    assert (detail.method, detail.url.path) == ("GET", "/api/collections/flowers")
    assert detail.headers["x-api-key"] == "k1" and detail.headers["x-request-id"] == "rid"


@pytest.mark.parametrize("name", ["Flowers", "../admin", "a/b", "", "-x", "x" * 64])
def test_an_invalid_collection_name_is_refused_before_sending(name: str) -> None:
    with pytest.raises(ValueError, match="invalid collection name"):
        calls.collection(name)
    with pytest.raises(ValueError, match="invalid collection name"):
        knobs(collection=name)
    with pytest.raises(ValueError, match="invalid collection name"):
        calls.image(1, name)


def test_a_vector_search_in_a_collection_with_a_filter() -> None:
    call = calls.search_vector([1, 0.5], None, knobs(collection="flowers", filter=FILTER, k=3))
    req = request(call)
    assert (req.method, req.url.path, req.url.query) == (
        "POST",
        "/api/collections/flowers/search/vector",
        b"",
    )
    assert json.loads(req.content) == {"vector": [1.0, 0.5], "k": 3, "filter": WIRE}
    assert req.headers["content-type"] == "application/json"


def test_without_a_collection_the_old_routes_and_no_filter_key() -> None:
    req = request(calls.search_vector(None, [[1.0], [2.0]], knobs(strict=True)))
    assert req.url.path == "/api/search/vector" and req.url.params["strict"] == "true"
    assert json.loads(req.content) == {"vectors": [[1.0], [2.0]]}
    similar = request(calls.search_similar(7, knobs(k=2)))
    assert similar.url.path == "/api/search/similar/7" and "filter" not in similar.url.params
    image = request(calls.search_image(b"img", "q.jpg", knobs()))
    assert image.url.path == "/api/search/image" and set(multipart_fields(image)) == {"file"}
    assert request(calls.image(9)).url.path == "/api/images/9"


def test_a_similar_search_sends_the_filter_as_a_json_query_parameter() -> None:
    call = calls.search_similar(7, knobs(collection="flowers", filter=FILTER, k=5, nprobe=8))
    req = request(call)
    assert req.url.path == "/api/collections/flowers/search/similar/7"
    query = {name: values[0] for name, values in parse_qs(req.url.query.decode()).items()}
    assert json.loads(query.pop("filter")) == WIRE
    assert query == {"k": "5", "nprobe": "8"}


def test_an_image_search_sends_the_filter_as_a_form_field() -> None:
    call = calls.search_image(b"\xff\xd8jpeg", "q.jpg", knobs(collection="flowers", filter=FILTER))
    req = request(call)
    assert req.url.path == "/api/collections/flowers/search/image" and req.url.query == b""
    fields = multipart_fields(req)
    assert json.loads(fields["filter"]) == WIRE and fields["file"] == b"\xff\xd8jpeg"
    assert b'name="file"; filename="q.jpg"' in req.content


def test_a_download_from_a_collection() -> None:
    req = request(calls.image(12, "flowers"))
    assert (req.method, req.url.path) == ("GET", "/api/collections/flowers/images/12")


def test_the_filter_models_and_their_json_send_the_same_bytes() -> None:
    models = And(
        all_of=[
            In(field="label", values=["tulips", "roses"]),
            Not(negated=Range(field="size", range=Bounds(gte=10000))),
            Or(any_of=[Prefix(field="key", prefix="photos/2024/"), Eq(field="ok", eq=True)]),
        ]
    )
    by_model = request(calls.search_vector([1.0], None, knobs(filter=models)))
    by_dict = request(calls.search_vector([1.0], None, knobs(filter=FILTER)))
    assert by_model.content == by_dict.content
    assert json.loads(by_model.content)["filter"] == WIRE


@pytest.mark.parametrize(
    "bad",
    [
        {"field": "label"},  # no operator
        {"field": "label", "eq": "a", "in": ["a"]},  # two operators
        {"field": "label", "in": []},  # an empty `in`
        {"field": "size", "range": {}},  # a range without a bound
        {"and": [{"field": "label", "eq": "a"}], "extra": 1},
        {"not": {"field": "label", "eq": {"nested": "object"}}},
        {"field": "label", "equals": "a"},
    ],
)
def test_a_malformed_filter_fails_before_anything_is_sent(bad: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        knobs(filter=bad)


def test_a_filter_the_server_would_refuse_is_the_servers_to_refuse() -> None:
    """Fields and types depend on the collection's schema, which only the server knows."""
    unknown = knobs(filter={"field": "no_such_field", "eq": 1})
    assert unknown.filter == Eq(field="no_such_field", eq=1)
