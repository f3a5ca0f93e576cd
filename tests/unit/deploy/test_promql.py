"""The PromQL reader the chart's monitoring tests rely on (tests/support/promql.py).

If it took a label or a function for a metric, the dashboard test would ask the services
for metrics nobody means; if it missed a selector, a misspelt metric would pass. Both
directions are pinned here, and so is the syntax check: each broken expression below is
one mistake a hand-edited dashboard or a helm template can make.
"""

from __future__ import annotations

import re

import pytest

from tests.support.promql import PromQLError, parse, tokenize


def test_tokens_keep_strings_ranges_and_durations_whole() -> None:
    tokens = tokenize('rate(x_total{a=~"5..", b!="{}"}[5m]) offset 1h30m > 1e-9')
    assert [(t.kind, t.text) for t in tokens] == [
        ("ident", "rate"),
        ("punct", "("),
        ("ident", "x_total"),
        ("punct", "{"),
        ("ident", "a"),
        ("op", "=~"),
        ("string", '"5.."'),
        ("punct", ","),
        ("ident", "b"),
        ("op", "!="),
        ("string", '"{}"'),
        ("punct", "}"),
        ("range", "[5m]"),
        ("punct", ")"),
        ("ident", "offset"),
        ("duration", "1h30m"),
        ("op", ">"),
        ("number", "1e-9"),
    ]


def test_grafana_variables_are_allowed_in_strings_and_ranges_only() -> None:
    kinds = [t.kind for t in tokenize('rate(x{ns="$namespace"}[$__rate_interval])')]
    assert kinds.count("range") == 1 and kinds.count("string") == 1
    with pytest.raises(PromQLError, match=r"unexpected '\$'"):
        tokenize("x{ns=$namespace}")


@pytest.mark.parametrize(
    ("expr", "metrics"),
    [
        # labels inside {} and after by/without/on/ignoring/group_left are not metrics
        (
            'histogram_quantile(0.99, sum by (le, pod) (rate(s_bucket{ns="a"}[5m])))',
            {"s_bucket"},
        ),
        ("sum without (instance) (up)", {"up"}),
        ("a / on (pod) group_left (node) b", {"a", "b"}),
        ("a * ignoring (kind) group_right b", {"a", "b"}),
        ("sum(rate(x_total[5m])) by (route_class)", {"x_total"}),
        # functions and aggregations are not metrics; their operands are
        ("clamp_min(sum(a), 1e-9)", {"a"}),
        ('label_replace(a, "dst", "$1", "src", "(.*)")', {"a"}),
        ('count_values("v", a)', {"a"}),
        ("topk(3, a) and b >= 20", {"a", "b"}),
        ('absent(up{job="x"} == 1) or vector(0)', {"up"}),
        # set operators, bool, unary minus, offset, @, subqueries
        ("a > bool 0.5 unless -b", {"a", "b"}),
        ("a offset 5m + b @ 1700000000", {"a", "b"}),
        ("max_over_time(rate(a[1m])[1h:5m])", {"a"}),
        ("quantile_over_time(0.9, a[10m])", {"a"}),
        # recording-rule names have colons; a metric may be called like a keyword's prefix
        ("job:requests:rate5m / bytes", {"job:requests:rate5m", "bytes"}),
        ('{__name__="x", a="b"} * 2', set()),
        ("1 + 2", set()),
    ],
)
def test_metric_names_are_the_selectors_only(expr: str, metrics: set[str]) -> None:
    assert parse(expr).metrics == metrics


def test_the_value_type_follows_the_expression() -> None:
    assert parse("a").type == "vector"
    assert parse("a[5m]").type == "matrix"
    assert parse("scalar(a) * 2").type == "scalar"
    assert parse('"text"').type == "string"


@pytest.mark.parametrize(
    ("expr", "why"),
    [
        ('x{a="b"', "expected }"),
        ("sum by (le (x)", "expected )"),
        ('x{{a="b"}}', "expected ident"),  # an unrendered helm action
        ("x{a=b}", "expected string"),
        ('x{a>"b"}', "is no label matcher"),
        ("x[5]", "bad range"),
        ("(x)[5m]", "a range needs a metric selector"),
        ("sum(x[5m])", "an aggregation needs an instant vector"),
        ("rate(x)", "rate() takes a range vector"),
        ("abs(x[5m])", "abs() takes no range vector"),
        ("quantile_over_time(0.9)", "quantile_over_time() needs a range vector"),
        ("x[5m] / 2", "'/' between matrix and scalar"),
        ("x and 1", "'and' needs two instant vectors"),
        ("histogram_quantiles(0.9, x)", "unknown function"),
        ("x +", "expected an expression"),
        ("by (x)", "a keyword where an expression should be"),
        ("{}", "needs a metric name or a matcher"),
        ("x y", "unexpected trailing input"),
        ("x ; y", "unexpected ';'"),
    ],
)
def test_broken_expressions_are_refused(expr: str, why: str) -> None:
    with pytest.raises(PromQLError, match=re.escape(why)):
        parse(expr)


def test_selectors_keep_their_matchers() -> None:
    query = parse('a{ns="x", pod=~"s.*"} / on (pod) b{ns="x"} + {job="j"}')
    assert query.selectors == [
        ("a", frozenset({("ns", "=", '"x"'), ("pod", "=~", '"s.*"')})),
        ("b", frozenset({("ns", "=", '"x"')})),
        (None, frozenset({("job", "=", '"j"')})),
    ]
