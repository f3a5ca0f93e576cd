"""The chart's monitoring: the Grafana dashboard and the PrometheusRule, as helm renders them.

Every query must be PromQL (tests/support/promql.py parses it), every dashboard query must
select `namespace="$namespace"` like the first panels do, the dashboard must be a layout
Grafana accepts (unique ids, panels on the 24-column grid, none on top of another, the
same data source), and the alerts must carry the values they are configured with. Whether
the metrics the queries read exist is the integration test's part
(tests/integration/cluster/test_dashboard.py): it needs running services.
"""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from tests.support.dashboards import (
    Where,
    dashboard_of,
    dashboard_queries,
    documented_metrics,
    exported_families,
    exported_series,
    missing_metrics,
    monitoring_objects,
    panels,
    queries,
    rules_of,
)
from tests.support.helm import CHART, helm
from tests.support.promql import parse

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
NAMESPACE = ("namespace", "=", '"$namespace"')
NEW_ALERTS = {"SimsearchRecallBelowThreshold", "SimsearchRecallDrift", "SimsearchQueryDrift"}


def alerts(**overrides: Any) -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in rules_of(monitoring_objects(**overrides))}


def test_every_query_is_promql() -> None:
    found = queries(monitoring_objects())
    assert len(found) > 30
    for where in found:
        query = parse(where.expr)  # raises naming the place of the mistake
        assert query.type in ("vector", "scalar"), where
        assert query.metrics, f"{where.place} reads no metric"


def test_every_dashboard_query_selects_the_namespace_variable() -> None:
    for where in dashboard_queries(dashboard_of(monitoring_objects())):
        if where.place == "variable $namespace":  # the variable that lists the namespaces
            continue
        for name, matchers in parse(where.expr).selectors:
            assert NAMESPACE in matchers, f"{where.place}: {name} without namespace=$namespace"


def test_the_dashboard_layout_is_grafanas() -> None:
    dashboard = dashboard_of(monitoring_objects())
    every = list(panels(dashboard))
    ids = [p["id"] for p in every]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(ids)}"
    boxes = []
    for panel in every:
        box = panel["gridPos"]
        assert set(box) == {"h", "w", "x", "y"} and all(isinstance(v, int) for v in box.values())
        assert box["x"] >= 0 and box["x"] + box["w"] <= 24 and box["h"] > 0, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"] == DATASOURCE, panel["title"]
            refs = [t["refId"] for t in panel["targets"]]
            assert refs and len(refs) == len(set(refs)), panel["title"]
        boxes.append((panel["title"], box))
    for i, (title, a) in enumerate(boxes):
        for other, b in boxes[i + 1 :]:
            apart_x = a["x"] + a["w"] <= b["x"] or b["x"] + b["w"] <= a["x"]
            apart_y = a["y"] + a["h"] <= b["y"] or b["y"] + b["h"] <= a["y"]
            assert apart_x or apart_y, f"{title!r} overlaps {other!r}"


def test_a_repeated_panel_repeats_over_a_defined_variable() -> None:
    dashboard = dashboard_of(monitoring_objects())
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    repeated = [p for p in panels(dashboard) if "repeat" in p]
    assert repeated
    for panel in repeated:
        assert panel["repeat"] in variables
        assert f"${panel['repeat']}" in panel["title"] + str(panel["targets"])


def test_the_panels_of_the_issue_read_their_metrics() -> None:
    dashboard = dashboard_of(monitoring_objects())
    read = set().union(*(parse(w.expr).metrics for w in dashboard_queries(dashboard)))
    wanted = {
        "simsearch_recall_at_k",
        "simsearch_recall_baseline",
        "simsearch_recall_samples",
        "simsearch_recall_drift",
        "simsearch_drift_ratio",
        "simsearch_router_coverage",
        "simsearch_shard_memory_anonymous_bytes",
        "simsearch_shard_memory_file_bytes",
        "simsearch_shard_memory_working_set_bytes",
        "simsearch_shard_memory_needed_bytes",
        "simsearch_shard_search_seconds_bucket",
        "simsearch_router_rate_limited_total",
        "simsearch_shard_exact_seconds_sum",
        "simsearch_shard_exact_seconds_bucket",
    }
    assert wanted <= read, wanted - read


def test_the_new_alerts_carry_their_values() -> None:
    rules = alerts(recallThreshold=0.83, recallMinSamples=57, driftRatioThreshold=1.61)
    recall = rules["SimsearchRecallBelowThreshold"]
    assert "< 0.83" in recall["expr"] and ">= 57" in recall["expr"]
    assert "> 1.61" in rules["SimsearchQueryDrift"]["expr"]
    assert {name: rules[name]["for"] for name in NEW_ALERTS} == {
        "SimsearchRecallBelowThreshold": "15m",
        "SimsearchRecallDrift": "30m",
        "SimsearchQueryDrift": "1h",
    }
    assert "--retrain" in rules["SimsearchQueryDrift"]["annotations"]["summary"]


def test_the_default_thresholds() -> None:
    rules = alerts()
    assert "< 0.9" in rules["SimsearchRecallBelowThreshold"]["expr"]
    assert "> 1.3" in rules["SimsearchQueryDrift"]["expr"]
    assert "== 1" in rules["SimsearchRecallDrift"]["expr"]


def test_prometheus_templates_survive_helm() -> None:
    """`{{ $labels.x }}` in an annotation is Prometheus' template, not helm's: it must be
    rendered through as text."""
    for name in NEW_ALERTS | {"SimsearchMemoryNearLimit"}:
        assert "{{ $labels." in alerts()[name]["annotations"]["description"], name


def test_shards_are_watched_on_anonymous_memory_not_rss() -> None:
    query = parse(alerts(memoryLimitRatio=0.77)["SimsearchMemoryNearLimit"]["expr"])
    by_metric = {name: matchers for name, matchers in query.selectors}
    assert "simsearch_shard_memory_anonymous_bytes" in by_metric
    rss = dict((label, (op, value)) for label, op, value in by_metric["container_memory_rss"])
    assert rss["container"] == ("=~", '"router|embedder"')  # the shard is not on RSS
    limits = [m for n, m in query.selectors if n == "kube_pod_container_resource_limits"]
    assert {("container", "=", '"shard"'), ("resource", "=", '"memory"')} <= limits[1]
    assert query.expr.count("> 0.77") == 2


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("metrics.prometheusRule.recallThreshold=1.5", "/recallThreshold"),
        ("metrics.prometheusRule.recallMinSamples=0", "/recallMinSamples"),
        ("metrics.prometheusRule.recallMinSamples=2.5", "/recallMinSamples"),
        ("metrics.prometheusRule.driftRatioThreshold=0", "/driftRatioThreshold"),
    ],
)
def test_the_schema_refuses_impossible_thresholds(setting: str, named: str) -> None:
    done = helm("template", "t", str(CHART), "--set-json", setting)
    assert done.returncode != 0 and named in done.stderr, done.stderr


def test_exported_series_names_follow_the_metric_types() -> None:
    """On prometheus_client's real output: a labelled metric with no child still counts."""
    registry = CollectorRegistry()
    Counter("demo_checks", "c", ["outcome"], registry=registry)  # no child: HELP/TYPE only
    Histogram("demo_seconds", "h", registry=registry)
    Gauge("demo_ratio", "g", ["collection"], registry=registry).labels("a").set(1)
    names = exported_series(generate_latest(registry).decode())
    assert {"demo_checks_total", "demo_seconds_bucket", "demo_seconds_count"} <= names
    assert {"demo_seconds_sum", "demo_ratio"} <= names
    assert "demo_checks" not in names and "demo_seconds" not in names


def test_families_are_named_as_the_docs_name_them() -> None:
    registry = CollectorRegistry()
    Counter("demo_checks", "c", ["outcome"], registry=registry).labels("ok").inc()
    Histogram("demo_seconds", "h", registry=registry).observe(1)
    Gauge("demo_created", "a gauge that only looks like a timestamp", registry=registry)
    families = exported_families(generate_latest(registry).decode())
    assert families == {
        "demo_checks_total": "counter",
        "demo_seconds": "histogram",
        "demo_created": "gauge",
    }


def test_documented_metrics_are_the_first_cells_of_table_rows() -> None:
    text = "| `simsearch_a_total` | counter | x |\n| `simsearch_b` | gauge |\nsee `simsearch_c`\n"
    assert documented_metrics(text) == {"simsearch_a_total", "simsearch_b"}


def test_missing_metrics_names_each_unknown_metric_and_where_it_is_read() -> None:
    found = [
        Where("panel 1", "sum(rate(demo_checks_total[5m])) / up"),
        Where("alert X", "demo_seconds > 1 or demo_typo"),
    ]
    missing = missing_metrics(found, {"demo_checks_total", "demo_seconds_sum"}, allowed={"up"})
    assert missing == {"demo_seconds": ["alert X"], "demo_typo": ["alert X"]}


def test_the_configmap_ships_the_dashboard_file_unchanged() -> None:
    """No helm templating inside the dashboard: Grafana's `{{pod}}` legends stay as written."""
    shipped = (CHART / "dashboards" / "simsearch.json").read_text()
    maps = [o for o in monitoring_objects() if o["kind"] == "ConfigMap"]
    texts = [m["data"]["simsearch.json"] for m in maps if "simsearch.json" in m["data"]]
    assert texts == [shipped.rstrip("\n")]
