"""Every metric the dashboard and the alerts query exists in a real service's /metrics.

The chart is rendered with the real helm (the monitoring scenario); the Grafana dashboard
comes out of its ConfigMap and the alert expressions out of its PrometheusRule; each query
is parsed (tests/support/promql.py) for the metric names its selectors read. A real router,
two shards and an embedder run as processes (tests/support/cluster.py) and their /metrics
pages, scraped idle, must offer every one of those names, or the name must be in the
allow-list below of series other exporters provide. A labelled metric that no request has
touched yet prints only its HELP and TYPE lines: those count, so the check does not depend
on traffic. A panel that reads a misspelt or removed metric would show "No data" forever;
this test fails first, naming the metric and the panels or alerts that read it.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.cluster import SmallCluster, small_cluster
from tests.support.dashboards import (
    documented_metrics,
    exported_families,
    exported_series,
    missing_metrics,
    monitoring_objects,
    queries,
)
from tests.support.paths import ROOT
from tests.support.promql import parse

pytestmark = pytest.mark.integration

# Series that Prometheus scrapes from other exporters in a cluster, never from simsearch.
ALLOWED = {
    "up": "Prometheus itself, one per scrape target",
    "container_memory_rss": "cAdvisor, through the kubelet",
    "kube_pod_container_resource_limits": "kube-state-metrics",
}


@pytest.fixture(scope="module")
def cluster(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmallCluster]:
    with small_cluster(s3_endpoint, tmp_path_factory.mktemp("dashboard-cluster")) as running:
        yield running


@pytest.fixture(scope="module")
def pages(cluster: SmallCluster) -> dict[str, str]:
    """Service -> its /metrics page, scraped idle."""
    services = {
        "router": cluster.router,
        "shard": cluster.shards[0],
        "embedder": cluster.embedder,
    }
    found: dict[str, str] = {}
    with httpx.Client(timeout=10) as client:
        for role, service in services.items():
            answer = client.get(f"{service.url}/metrics")
            assert answer.status_code == 200, (role, answer.text)
            found[role] = answer.text
    return found


@pytest.fixture(scope="module")
def exported(pages: dict[str, str]) -> dict[str, set[str]]:
    """Service -> the series names its /metrics page offers."""
    return {role: exported_series(text) for role, text in pages.items()}


def test_every_queried_metric_is_exported(exported: dict[str, set[str]]) -> None:
    found = queries(monitoring_objects())
    every = set().union(*exported.values())
    missing = missing_metrics(found, every, ALLOWED)
    report = "\n".join(f"  {name}: read by {', '.join(places)}" for name, places in missing.items())
    assert not missing, f"metrics no service exports ({sorted(missing)}):\n{report}"


def test_the_pages_are_real_and_the_allow_list_is_used(exported: dict[str, set[str]]) -> None:
    """Not vacuous: each page has its own metrics, and every allowed name is still queried
    (an unused entry could hide a future typo of the same name)."""
    assert "simsearch_router_queries_total" in exported["router"]
    assert "simsearch_shard_search_seconds_bucket" in exported["shard"]
    assert "simsearch_embedder_inference_seconds_bucket" in exported["embedder"]
    read = set().union(*(parse(w.expr).metrics for w in queries(monitoring_objects())))
    assert set(ALLOWED) <= read, set(ALLOWED) - read


def test_docs_monitoring_lists_every_metric_and_no_other(pages: dict[str, str]) -> None:
    """docs/monitoring.md has one table row per simsearch metric the services export (a
    counter as `x_total`, a histogram by its family name), and none they do not."""
    exported = {
        name
        for text in pages.values()
        for name in exported_families(text)
        if name.startswith("simsearch_")
    }
    documented = documented_metrics((ROOT / "docs" / "monitoring.md").read_text())
    assert not exported - documented, f"undocumented: {sorted(exported - documented)}"
    assert not documented - exported, f"documented, not exported: {sorted(documented - exported)}"
