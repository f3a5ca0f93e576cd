"""Query bodies the router refuses, with the reason, before any shard is asked."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from simsearch.common.api import VectorQuery
from simsearch.common.errors import EmptyInput, InvalidFilter, InvalidParameter, InvalidVector
from simsearch.router.fanout import FanoutResult, Hit
from simsearch.router.query import (
    answer_fields,
    check_k,
    hit_prefix,
    parse_filter,
    prepare_queries,
    to_hits,
)


def test_queries_are_scaled_to_unit_length() -> None:
    out = prepare_queries([[3.0, 4.0], [0.0, -2.0]], dim=2, max_queries=8)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, -1.0]], rtol=1e-6)


def test_huge_finite_values_do_not_overflow_to_nan() -> None:
    out = prepare_queries([[1e308, 1e308]], dim=2, max_queries=1)
    np.testing.assert_allclose(out, [[math.sqrt(0.5)] * 2], rtol=1e-6)


@pytest.mark.parametrize(
    ("rows", "error", "words"),
    [
        ([[1.0, 2.0, 3.0]], InvalidVector, "3 values; the index has dim 2"),
        ([[float("nan"), 1.0]], InvalidVector, "NaN or infinity"),
        ([[float("inf"), 1.0]], InvalidVector, "NaN or infinity"),
        ([[0.0, 0.0]], InvalidVector, "all zeros"),
        ([[1.0, 2.0], [1.0]], InvalidVector, "one length"),
        ([], EmptyInput, "no query vector"),
        ([[1.0, 0.0]] * 5, InvalidParameter, "at most 4"),
    ],
)
def test_bad_vectors_are_refused_with_the_reason(
    rows: list[list[float]], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        prepare_queries(rows, dim=2, max_queries=4)


def test_k_defaults_and_range() -> None:
    assert check_k(None, 10, 1000) == 10
    assert check_k(1, 10, 1000) == 1 and check_k(1000, 10, 1000) == 1000
    for bad in (0, -1, 1001):
        with pytest.raises(InvalidParameter, match="between 1 and 1000"):
            check_k(bad, 10, 1000)


def test_body_needs_exactly_one_of_vector_and_vectors() -> None:
    assert VectorQuery.model_validate({"vector": [1, 2]}).rows() == [[1.0, 2.0]]
    assert len(VectorQuery.model_validate({"vectors": [[1, 2], [3, 4]]}).rows()) == 2
    for body in ({}, {"vector": [1], "vectors": [[1]]}, {"vector": [1], "colour": "red"}):
        with pytest.raises(ValidationError):
            VectorQuery.model_validate(body)
    with pytest.raises(ValidationError):
        VectorQuery.model_validate({"vector": [1], "refine": 0})


def test_hits_are_ranked_from_one_with_urls() -> None:
    hits = to_hits([Hit(7, 0.99999994, "a/b.jpg"), Hit(3, 0.5, "c.png")], "/api")
    assert [h.rank for h in hits] == [1, 2]
    assert hits[0].url == "/api/images/7" and hits[0].similarity_score == 1.0
    assert hits[1].model_dump().keys() >= {"path", "similarity_score", "rank", "id", "url"}


def test_answer_fields_say_how_complete_the_answer_is() -> None:
    result = FanoutResult("v1", 8, [[]], {0, 1, 2, 3, 4, 5}, [])
    fields = answer_fields(result, k=10, took_ms=1.23456)
    assert fields == {
        "k": 10,
        "coverage": 0.75,
        "partial": True,
        "index_version": "v1",
        "partitions": 8,
        "partitions_answered": 6,
        "took_ms": 1.235,
    }


# ------------------------------------------------------------------ filters as strings


def test_a_filter_string_is_parsed_into_the_filter_model() -> None:
    parsed = parse_filter('{"and": [{"field": "label", "eq": "tulips"}]}', "the field")
    assert parsed is not None
    assert parsed.model_dump_json() == '{"and":[{"field":"label","eq":"tulips"}]}'
    assert parse_filter(None, "x") is None and parse_filter("  ", "x") is None


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("{not json", "the query parameter 'filter' is not a filter"),
        ('{"field": "label"}', "exactly one operator"),
        ('{"field": "label", "eq": "a", "in": ["b"]}', "exactly one operator"),
        ('{"field": "size", "range": {}}', "at least one of gt"),
        ("[1, 2]", "is not a filter"),
    ],
)
def test_a_string_that_is_not_a_filter_is_a_400_naming_filter(text: str, words: str) -> None:
    with pytest.raises(InvalidFilter) as err:
        parse_filter(text, "the query parameter 'filter'")
    assert words in err.value.reason and "filter" in err.value.reason


def test_hit_urls_of_a_collection_search_point_at_its_images() -> None:
    hits = [Hit(7, 0.5, "a.jpg")]
    assert to_hits(hits, hit_prefix("/api", "cats"))[0].url == "/api/collections/cats/images/7"
    assert to_hits(hits, hit_prefix("", None))[0].url == "/images/7"
