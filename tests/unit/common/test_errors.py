"""The one error tree and its one map to HTTP (`common.errors`, `common.http.status_for`).

The statuses are pinned here class by class as they were when they still sat on the
classes: moving them to the edge was a refactor, and a class added later must be given a
status on purpose (the tree-wide test fails until it is pinned). The router's pass-through
of an embedder's refusal is checked for every code the tree knows and for the leftovers.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from simsearch.common import errors
from simsearch.common.errors import (
    BadInput,
    CorruptImage,
    RateLimited,
    SimsearchError,
    UpstreamFailure,
    UpstreamRejected,
    error_for_code,
)
from simsearch.common.http import headers_for, status_for
from simsearch.router.service import embedder_refusal
from simsearch.router.transport import Reply

# class name -> status on the wire (before the refactor: its `status_code`)
PINNED = {
    "SimsearchError": 500,
    "BadInput": 400,
    "EmptyInput": 400,
    "CorruptImage": 400,
    "InvalidVector": 400,
    "InvalidParameter": 400,
    "NoImages": 400,
    "MalformedBody": 400,
    "ValidationFailed": 422,  # was the handlers' hard-coded 422 `validation_error`
    "PayloadTooLarge": 413,
    "ImageTooLarge": 413,
    "UnsupportedMediaType": 415,
    "NotFound": 404,
    "CollectionNotFound": 404,
    "InvalidFilter": 400,
    "FilterTooLarge": 400,
    "Unauthorized": 401,
    "Forbidden": 403,
    "RateLimited": 429,
    "ConfigError": 500,
    "ModelWeightsMissing": 500,
    "StorageError": 503,
    "LocalWriteError": 503,
    "ObjectNotFound": 404,
    "Overloaded": 503,
    "NotServed": 409,
    "VersionNotLoaded": 409,
    "PartitionsNotReady": 409,
    "CorruptIndex": 503,
    "Unavailable": 503,
    "PartialAnswer": 503,
    "TopologyUnknown": 503,
    "NoImagesRoot": 503,
    "UpstreamError": 502,
    "UpstreamFailure": 503,  # new in the tree; before, one that escaped was a bare 500
}


def tree(root: type[SimsearchError] = SimsearchError) -> Iterator[type[SimsearchError]]:
    yield root
    for child in root.__subclasses__():
        yield from tree(child)


def example(cls: type[SimsearchError]) -> SimsearchError:
    """One instance of `cls`, with the data its constructor needs."""
    if cls is RateLimited:
        return RateLimited("slow down", 3)
    if cls is UpstreamFailure:
        return UpstreamFailure("http://s", "refused", unreachable=True, timeout=False)
    if cls is UpstreamRejected:
        return UpstreamRejected(405, "method_not_allowed", "no")
    return cls("why")


def test_every_class_of_the_tree_answers_its_pinned_status() -> None:
    classes = [cls for cls in tree() if cls is not UpstreamRejected]
    assert {cls.__name__ for cls in classes} == set(PINNED)  # a new class: pin its status
    assert {cls.__name__: status_for(example(cls)) for cls in classes} == PINNED


def test_no_status_is_kept_on_the_domain_classes() -> None:
    assert not [cls.__name__ for cls in tree() if hasattr(cls, "status_code")]
    assert all(getattr(errors, cls.__name__) is cls for cls in tree())  # all in one module


def test_codes_are_unique_so_a_code_names_one_class() -> None:
    codes = [cls.code for cls in tree() if cls is not UpstreamRejected]
    assert len(codes) == len(set(codes))


def test_only_a_rate_limit_adds_a_header() -> None:
    assert headers_for(RateLimited("slow down", 0)) == {"Retry-After": "1"}  # never 0
    assert headers_for(CorruptImage("bad")) == {}


def test_an_upstream_failure_keeps_its_data_and_its_text() -> None:
    failure = UpstreamFailure("http://s:1", "no answer", unreachable=False, timeout=True)
    assert (failure.url, failure.reason) == ("http://s:1", "no answer")
    assert (failure.unreachable, failure.timeout) == (False, True)
    assert str(failure) == "http://s:1: no answer"  # what the registry records
    assert isinstance(failure, SimsearchError)


@pytest.mark.parametrize("cls", [c for c in tree() if c is not SimsearchError])
def test_a_code_rebuilds_its_class(cls: type[SimsearchError]) -> None:
    rebuilt = error_for_code(cls.code, "the reason")
    if cls in (RateLimited, UpstreamFailure, UpstreamRejected):  # need data a code lacks
        assert type(rebuilt) is BadInput and rebuilt.code == cls.code
    else:
        assert type(rebuilt) is cls and rebuilt.reason == "the reason"


def test_an_unknown_or_missing_code_is_bad_input_with_the_code_kept() -> None:
    unknown = error_for_code("teapot_refusal", "short and stout")
    assert type(unknown) is BadInput and unknown.code == "teapot_refusal"
    assert BadInput.code == "bad_input"  # the instance's code did not leak to the class
    assert error_for_code(None, "x").code == "bad_input"


def reply(status: int, code: str | None, detail: str = "the embedder's reason") -> Reply:
    if code is None:
        return Reply(status, b"<html>denied</html>", "text/html")
    body = f'{{"status":"error","error":"{code}","detail":"{detail}","request_id":"r"}}'
    return Reply(status, body.encode(), "application/json")


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "corrupt_image", "CorruptImage"),
        (400, "empty_input", "EmptyInput"),
        (400, "malformed_body", "MalformedBody"),
        (413, "payload_too_large", "PayloadTooLarge"),
        (413, "image_too_large", "ImageTooLarge"),
        (415, "unsupported_media_type", "UnsupportedMediaType"),
        (422, "validation_error", "ValidationFailed"),
    ],
)
def test_the_embedders_refusals_come_back_as_the_trees_own_class(
    status: int, code: str, cls: str
) -> None:
    err = embedder_refusal(reply(status, code))
    assert type(err).__name__ == cls
    assert (status_for(err), err.code, err.reason) == (status, code, "the embedder's reason")


@pytest.mark.parametrize(
    ("status", "code", "sent_code"),
    [
        (405, "method_not_allowed", "method_not_allowed"),  # a framework error
        (404, "not_found", "not_found"),  # a wrong embedder URL: not a `BadInput` here
        (429, None, "bad_input"),  # a proxy's own page, no code
        (400, "something_new", "something_new"),  # a code this tree does not know...
        (418, "something_new", "something_new"),
        (413, "corrupt_image", "corrupt_image"),  # ...or a status the code does not have
    ],
)
def test_other_refusals_keep_the_embedders_status_as_data(
    status: int, code: str | None, sent_code: str
) -> None:
    err = embedder_refusal(reply(status, code))
    assert isinstance(err, BadInput)  # counted as a rejected query, as before
    assert (status_for(err), err.code) == (status, sent_code)
    if code == "something_new" and status == 400:
        assert type(err) is BadInput
    else:
        assert isinstance(err, UpstreamRejected) and err.upstream_status == status
