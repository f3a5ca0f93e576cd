"""The chart's monitoring as data: every PromQL query of the dashboard and the alerting rules.

The Grafana dashboard ships inside a ConfigMap and the alerts inside a PrometheusRule, both
rendered by helm; this module takes them out of the rendered objects (`queries`), says
which series names a `/metrics` page offers (`exported_series`, from prometheus_client's
text format), and which metrics a set of queries reads that no page offers
(`missing_metrics`). The chart tests and the dashboard integration test share it.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.helm import CHART, render, template_text
from tests.support.promql import parse

MONITORING_VALUES = CHART / "ci" / "monitoring-values.yaml"
# Grafana's variable functions: label_values(selector, label) and query_result(expr)
_LABEL_VALUES = re.compile(r"^\s*label_values\((?P<expr>.+),\s*[a-zA-Z_]\w*\s*\)\s*$", re.S)
_QUERY_RESULT = re.compile(r"^\s*query_result\((?P<expr>.+)\)\s*$", re.S)
# what each TYPE adds to the family name in the samples Prometheus stores
_SUFFIXES = {
    "histogram": ("_bucket", "_count", "_sum"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("", "_count", "_sum"),
    "counter": ("_total",),
    "info": ("_info",),
}


@dataclass(frozen=True)
class Where:
    """One query and the place it comes from (a panel, a variable or an alert)."""

    place: str
    expr: str


def monitoring_objects(**overrides: Any) -> tuple[dict[str, Any], ...]:
    """The rendered objects of the monitoring scenario (ServiceMonitor, rules, dashboard),
    with `overrides` (prometheusRule values by name) on top. A values file carries them,
    not `--set`, which would pass a float such as 0.8 as a string to the schema."""
    if not overrides:
        return render(str(MONITORING_VALUES))
    values = {"metrics": {"prometheusRule": overrides}}
    with tempfile.TemporaryDirectory() as folder:
        extra = Path(folder) / "overrides.yaml"
        extra.write_text(yaml.safe_dump(values))
        text = template_text("-f", str(MONITORING_VALUES), "-f", str(extra))
    return tuple(d for d in yaml.safe_load_all(text) if d)


def dashboard_of(objects: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The dashboard JSON out of the rendered ConfigMap."""
    maps = [o for o in objects if o["kind"] == "ConfigMap" and "simsearch.json" in o["data"]]
    assert len(maps) == 1, f"{len(maps)} dashboard ConfigMaps"
    dashboard: dict[str, Any] = json.loads(maps[0]["data"]["simsearch.json"])
    return dashboard


def rules_of(objects: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every rule of the rendered PrometheusRule."""
    found = [o for o in objects if o["kind"] == "PrometheusRule"]
    assert len(found) == 1, f"{len(found)} PrometheusRule objects"
    return [rule for group in found[0]["spec"]["groups"] for rule in group["rules"]]


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside (collapsed) rows included."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries(dashboard: dict[str, Any]) -> list[Where]:
    """The PromQL of every panel target and of every query variable."""
    found = [
        Where(f"panel {panel['id']} {panel['title']!r} {target['refId']}", target["expr"])
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
    ]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable["query"]
        text = query if isinstance(query, str) else query.get("query", "")
        if match := _LABEL_VALUES.match(text) or _QUERY_RESULT.match(text):
            found.append(Where(f"variable ${variable['name']}", match.group("expr")))
    return found


def rule_queries(rules: Iterable[dict[str, Any]]) -> list[Where]:
    """The expression of every alerting and recording rule."""
    return [Where(f"alert {r.get('alert') or r.get('record')}", r["expr"]) for r in rules]


def queries(objects: Iterable[dict[str, Any]]) -> list[Where]:
    """Every query of the rendered monitoring objects: the dashboard's, then the rules'."""
    objects = tuple(objects)
    return dashboard_queries(dashboard_of(objects)) + rule_queries(rules_of(objects))


def exported_series(text: str) -> set[str]:
    """The sample names a Prometheus text page offers, from its TYPE lines and its samples.

    A labelled metric none of whose children was ever set prints only its HELP and TYPE
    lines; its family still counts, with the names Prometheus stores for that type (a
    histogram `x` is queried as `x_bucket`, `x_count`, `x_sum`; a counter as `x_total`,
    which prometheus_client's text format already puts in the TYPE line).
    """
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            suffixes = _SUFFIXES.get(kind, ("",))
            if kind == "counter" and name.endswith("_total"):
                suffixes = ("",)
            names |= {name + suffix for suffix in suffixes}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


def exported_families(text: str) -> dict[str, str]:
    """Family name -> type, from the TYPE lines (a counter's name ends in `_total` in
    prometheus_client's text format; the `_created` gauges beside counters and histograms
    are left out: they are timestamps of the family, not metrics of their own)."""
    families = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            families[name] = kind
    return {
        name: kind
        for name, kind in families.items()
        if not (name.endswith("_created") and _has_created(families, name))
    }


def _has_created(families: dict[str, str], name: str) -> bool:
    base = name.removesuffix("_created")
    return f"{base}_total" in families or families.get(base) in ("histogram", "summary")


def documented_metrics(markdown: str) -> set[str]:
    """The metric names that open a row of a table (`| `simsearch_x` | type | ...`)."""
    return set(re.findall(r"^\| `(simsearch_\w+)`", markdown, re.M))


def missing_metrics(
    found: Iterable[Where], exported: set[str], allowed: Iterable[str] = ()
) -> dict[str, list[str]]:
    """Metric name -> the places that read it, for every metric neither exported nor allowed."""
    known = exported | set(allowed)
    missing: dict[str, list[str]] = {}
    for where in found:
        for metric in sorted(parse(where.expr).metrics - known):
            missing.setdefault(metric, []).append(where.place)
    return missing
