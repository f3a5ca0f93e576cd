"""A small PromQL reader for the chart's tests: tokens, a syntax check, the metrics a query reads.

The dashboard and the alerting rules are strings that nothing in this repository runs, so a
typo in a metric name or an unbalanced brace would only show in a live Prometheus. This
reader is enough of PromQL to catch both: `tokenize` splits an expression (strings, ranges
such as `[5m]` or Grafana's `[$__rate_interval]`, numbers, durations, identifiers,
operators), and `parse` walks the grammar (selectors with their matchers, functions and
aggregations with `by`/`without`, binary operators with `bool`, `on`/`ignoring` and
`group_left`/`group_right`, `offset`, `@`, subqueries), checks the value types where a
mistake is common (a range vector where an instant one is wanted and the reverse, e.g.
`sum(x[5m])` or `rate(x)`), and collects the metric name of every selector. Label names
(inside `{}`, after `by`, `on`, ...) and function names are never taken for metrics.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["PromQLError", "Query", "Token", "parse", "tokenize"]


class PromQLError(ValueError):
    """The expression is not PromQL (the message names the place)."""


@dataclass(frozen=True)
class Token:
    kind: str  # ident, number, duration, string, range, op, punct
    text: str
    pos: int


_DURATION = r"(?:\d+(?:ms|[smhdwy]))+"
_TOKEN = re.compile(
    rf"""
    (?P<space>\s+|\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|`[^`]*`)
  | (?P<range>\[[^\[\]]*\])
  | (?P<duration>{_DURATION}(?![\w.]))
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>==|!=|=~|!~|<=|>=|[<>=+\-*/%^@])
  | (?P<punct>[(){{}},])
    """,
    re.VERBOSE,
)
# what may stand inside [...]: a duration, or a Grafana interval variable; `:step` for subqueries
_RANGE_PART = rf"(?:{_DURATION}|\$__\w+|\$\{{__\w+\}})"
_RANGE = re.compile(rf"\[\s*{_RANGE_PART}\s*(?::\s*{_RANGE_PART}?\s*)?\]")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


AGGREGATIONS = _words(
    "sum min max avg group stddev stdvar count count_values bottomk topk quantile "
    "limitk limit_ratio"
)
# functions whose argument at the given index must be a range vector
RANGE_FUNCTIONS = dict.fromkeys(
    _words(
        "rate irate increase delta idelta deriv predict_linear resets changes absent_over_time "
        "present_over_time avg_over_time min_over_time max_over_time sum_over_time "
        "count_over_time stddev_over_time stdvar_over_time last_over_time mad_over_time "
        "holt_winters double_exponential_smoothing"
    ),
    0,
) | {"quantile_over_time": 1}
FUNCTIONS = _words(
    "abs absent ceil clamp clamp_max clamp_min day_of_month day_of_week day_of_year "
    "days_in_month exp floor histogram_avg histogram_count histogram_fraction "
    "histogram_quantile histogram_stddev histogram_stdvar histogram_sum hour label_join "
    "label_replace ln log10 log2 minute month round scalar sgn sort sort_desc sort_by_label "
    "sort_by_label_desc sqrt time timestamp vector year acos acosh asin asinh atan atanh cos "
    "cosh sin sinh tan tanh deg rad pi"
) | frozenset(RANGE_FUNCTIONS)
_SCALAR_FUNCTIONS = frozenset({"scalar", "time", "pi"})
BINARY = _words("+ - * / % ^ == != <= >= < > and or unless atan2")
_SET_OPS = frozenset({"and", "or", "unless"})
KEYWORDS = _words("by without on ignoring group_left group_right bool offset and or unless atan2")
MATCH_OPS = frozenset({"=", "!=", "=~", "!~"})
_AGG_NEXT = frozenset({"(", "by", "without"})


def tokenize(expr: str) -> list[Token]:
    """The tokens of `expr` (whitespace and comments dropped); a character PromQL does not
    know (an unrendered `{{` shows as two `{`, a stray `$` as itself) raises."""
    tokens: list[Token] = []
    pos = 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None:
            raise PromQLError(f"unexpected {expr[pos]!r} at {pos} in {expr!r}")
        kind = match.lastgroup or ""
        if kind == "range" and not _RANGE.fullmatch(match.group()):
            raise PromQLError(f"bad range {match.group()!r} at {pos} in {expr!r}")
        if kind != "space":
            tokens.append(Token(kind, match.group(), pos))
        pos = match.end()
    return tokens


Matcher = tuple[str, str, str]  # label, operator, the string literal as written (quoted)


@dataclass
class Query:
    """A parsed expression: its source, its value type, its selectors (metric name or None,
    and their label matchers) and the metrics they name."""

    expr: str
    type: str  # vector, matrix, scalar, string
    selectors: list[tuple[str | None, frozenset[Matcher]]] = field(default_factory=list)

    @property
    def metrics(self) -> set[str]:
        return {name for name, _ in self.selectors if name is not None}


def parse(expr: str) -> Query:
    """Check `expr` and return what it reads; raises `PromQLError` naming the problem."""
    parser = _Parser(expr, tokenize(expr))
    kind = parser.expression()
    if parser.peek() is not None:
        parser.fail("unexpected trailing input")
    return Query(expr, kind, parser.selectors)


class _Parser:
    """Recursive descent over the tokens; each method returns the value type it read."""

    def __init__(self, expr: str, tokens: list[Token]) -> None:
        self.expr = expr
        self.tokens = tokens
        self.at = 0
        self.selectors: list[tuple[str | None, frozenset[Matcher]]] = []

    def peek(self, offset: int = 0) -> Token | None:
        index = self.at + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def fail(self, why: str) -> None:
        token = self.peek()
        where = f"{token.text!r} at {token.pos}" if token else "the end"
        raise PromQLError(f"{why}: {where} in {self.expr!r}")

    def take(self, text: str | None = None, kind: str | None = None) -> Token:
        token = self.peek()
        if token is None or (text and token.text != text) or (kind and token.kind != kind):
            self.fail(f"expected {text or kind}")
        assert token is not None
        self.at += 1
        return token

    def accept(self, text: str) -> bool:
        token = self.peek()
        if token is not None and token.text == text and token.kind in ("ident", "op", "punct"):
            self.at += 1
            return True
        return False

    def expression(self) -> str:
        """unary (binop modifiers unary)*: precedence does not matter for a syntax check."""
        left = self.unary()
        while (token := self.peek()) is not None and token.text in BINARY:
            self.at += 1
            self.binary_modifiers(token.text)
            right = self.unary()
            left = self.combine(token.text, left, right)
        return left

    def combine(self, op: str, left: str, right: str) -> str:
        """The type of `left op right`; range vectors and strings take no operator."""
        if "matrix" in (left, right) or "string" in (left, right):
            self.fail(f"{op!r} between {left} and {right}")
        if op in _SET_OPS and (left, right) != ("vector", "vector"):
            self.fail(f"{op!r} needs two instant vectors")
        return "vector" if "vector" in (left, right) else "scalar"

    def binary_modifiers(self, op: str) -> None:
        self.accept("bool")
        if self.accept("on") or self.accept("ignoring"):
            self.label_list()
        grouping = self.accept("group_left") or self.accept("group_right")
        if grouping and (token := self.peek()) is not None and token.text == "(":
            self.label_list()

    def unary(self) -> str:
        if self.accept("-") or self.accept("+"):
            kind = self.unary()
            if kind not in ("vector", "scalar"):
                self.fail("a sign before a range vector or a string")
            return kind
        return self.postfix(self.primary())

    def postfix(self, kind: str) -> str:
        """Ranges and subqueries `[...]`, `offset d`, `@ t` after a primary; a bare
        selector (`selector`) becomes an instant vector here or a range vector with `[d]`."""
        while (token := self.peek()) is not None:
            if token.kind == "range":
                subquery = ":" in token.text
                if not (kind == "selector" or (subquery and kind == "vector")):
                    self.fail("a range needs a metric selector (or a subquery of a vector)")
                self.at += 1
                kind = "matrix"
            elif token.text == "offset" and token.kind == "ident":
                self.at += 1
                self.accept("-")
                self.take(kind="duration")
            elif token.text == "@":
                self.at += 1
                self.at_modifier()
            else:
                break
        return "vector" if kind == "selector" else kind

    def at_modifier(self) -> None:
        token = self.peek()
        if token is not None and token.text in ("start", "end"):
            self.at += 1
            self.take("(")
            self.take(")")
        else:
            self.accept("-")
            self.take(kind="number")

    def primary(self) -> str:
        token = self.peek()
        if token is None:
            self.fail("expected an expression")
        assert token is not None
        if token.kind in ("number", "string"):
            self.at += 1
            return "scalar" if token.kind == "number" else "string"
        if token.text == "(":
            self.at += 1
            kind = self.expression()
            self.take(")")
            return kind
        if token.text == "{":
            return self.selector(None)
        if token.kind == "ident":
            return self.identifier(token)
        self.fail("expected an expression")
        return ""

    def identifier(self, token: Token) -> str:
        """An aggregation, a function call, inf/nan, or a metric selector."""
        name = token.text
        following = self.peek(1)
        if name in KEYWORDS:
            self.fail("a keyword where an expression should be")
        if name in AGGREGATIONS and following is not None and following.text in _AGG_NEXT:
            return self.aggregation()
        if following is not None and following.text == "(":
            return self.call(name)
        if name.lower() in ("inf", "nan"):
            self.at += 1
            return "scalar"
        return self.selector(name)

    def selector(self, name: str | None) -> str:
        if name is not None:
            self.take(kind="ident")
        matchers = self.matchers(named=name is not None) if self.accept("{") else []
        self.selectors.append((name, frozenset(matchers)))
        return "selector"

    def matchers(self, named: bool) -> list[Matcher]:
        """`label op "value"` pairs up to `}`; a bare `{}` needs a metric name before it."""
        found: list[Matcher] = []
        while not self.accept("}"):
            label = self.take(kind="ident")
            op = self.take(kind="op")
            if op.text not in MATCH_OPS:
                self.fail(f"{op.text!r} is no label matcher (label {label.text})")
            found.append((label.text, op.text, self.take(kind="string").text))
            if not self.accept(","):
                self.take("}")
                break
        if not named and not found:
            self.fail("a selector needs a metric name or a matcher")
        return found

    def label_list(self) -> None:
        self.take("(")
        while not self.accept(")"):
            self.take(kind="ident")
            if not self.accept(","):
                self.take(")")
                break

    def aggregation(self) -> str:
        """`agg [by|without (labels)] (params) [by|without (labels)]`."""
        self.at += 1
        grouped = self.accept("by") or self.accept("without")
        if grouped:
            self.label_list()
        args = self.arguments()
        if not args or args[-1] != "vector":
            self.fail("an aggregation needs an instant vector as its last argument")
        if not grouped and (self.accept("by") or self.accept("without")):
            self.label_list()
        return "vector"

    def call(self, name: str) -> str:
        if name not in FUNCTIONS:
            self.fail(f"unknown function {name!r}")
        self.at += 1
        args = self.arguments()
        wants_range = RANGE_FUNCTIONS.get(name)
        for index, kind in enumerate(args):
            if (kind == "matrix") != (index == wants_range):
                wanted = "a range" if index == wants_range else "no range"
                self.fail(f"{name}() takes {wanted} vector as argument {index + 1}")
        if wants_range is not None and len(args) <= wants_range:
            self.fail(f"{name}() needs a range vector")
        return "scalar" if name in _SCALAR_FUNCTIONS else "vector"

    def arguments(self) -> list[str]:
        self.take("(")
        kinds: list[str] = []
        while not self.accept(")"):
            kinds.append(self.expression())
            if not self.accept(","):
                self.take(")")
                break
        return kinds
