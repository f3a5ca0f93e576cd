"""Router settings refuse configurations that could never find a shard; discovery sources
read what they are pointed at; health states follow the shards' reports."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from simsearch.common.errors import ConfigError
from simsearch.common.settings import load_settings
from simsearch.common.wire import ShardInfo, ShardVersionInfo
from simsearch.router import status
from simsearch.router.discovery import make_source
from simsearch.router.embedder_watch import EmbedderState
from simsearch.router.registry import ShardState
from simsearch.router.settings import RouterSettings
from simsearch.router.source import DnsSource, FileSource

VERSION = "v20250101T000000Z-aaaaaa"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SIMSEARCH_SHARDS", "SIMSEARCH_DISCOVERY", "SIMSEARCH_EMBEDDER_URL"):
        monkeypatch.delenv(name, raising=False)


def test_static_urls_are_normalised() -> None:
    settings = load_settings(RouterSettings, shards=" http://a:1/ ,http://b:2,,http://a:1")
    assert settings.shard_urls() == ["http://a:1", "http://b:2"]
    assert settings.port == 8000 and settings.timeout_ms == 2000 and settings.max_k == 1000


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({}, "SIMSEARCH_SHARDS"),
        ({"discovery": "file"}, "SIMSEARCH_SHARDS_FILE"),
        ({"discovery": "dns"}, "SIMSEARCH_SHARDS_DNS"),
        ({"shards": "a:1"}, "http:// or https://"),
        ({"shards": "http://a", "default_k": 50, "max_k": 20}, "SIMSEARCH_DEFAULT_K"),
        ({"shards": "http://a", "max_k": 1001}, "SIMSEARCH_MAX_K"),
        ({"shards": "http://a", "embedder_url": "embedder:8001"}, "SIMSEARCH_EMBEDDER_URL"),
    ],
)
def test_bad_settings_fail_at_start_naming_the_variable(
    overrides: dict[str, object], words: str
) -> None:
    with pytest.raises(ConfigError, match=words):
        load_settings(RouterSettings, **overrides)


def test_file_source_keeps_the_last_good_list(tmp_path: Path) -> None:
    path = tmp_path / "shards.json"
    path.write_text(json.dumps({"shards": ["http://127.0.0.1:9001/", "http://127.0.0.1:9002"]}))
    settings = load_settings(RouterSettings, discovery="file", shards_file=str(path))
    source = make_source(settings)
    assert isinstance(source, FileSource)
    first = asyncio.run(source.urls())
    assert first == ["http://127.0.0.1:9001", "http://127.0.0.1:9002"]
    path.write_text("{half a file")
    assert asyncio.run(source.urls()) == first


def test_dns_source_lists_one_url_per_address() -> None:
    urls = asyncio.run(DnsSource("localhost", 8002).urls())
    assert urls and all(u.endswith(":8002") for u in urls)
    assert "http://127.0.0.1:8002" in urls or "http://[::1]:8002" in urls
    assert asyncio.run(DnsSource("no-such-host.invalid", 8002).urls()) == []


def state(url: str, ready: list[int] | None, p: int = 4) -> ShardState:
    """A shard that is up with `ready` partitions, or down (None)."""
    if ready is None:
        return ShardState(url, up=False, error="refused", failures=1)
    held = ShardVersionInfo(
        version=VERSION, partitions=p, ready=ready, dim=8, nprobe=1, refine=1,
        vectors=10 * len(ready), model="test",
    )  # fmt: skip
    info = ShardInfo(
        ordinal=0, replicas=2, index="default", ready=True, versions=[held], rss_bytes=0,
        version="test",
    )  # fmt: skip
    return ShardState(url, up=True, info=info, seen_at=0.0)


def test_health_states() -> None:
    none, up = EmbedderState(configured=False), EmbedderState(configured=True, up=True)
    full = [state("a", [0, 1]), state("b", [2, 3])]
    assert status.health(full, 1, none).status == "healthy"
    assert status.health(full, 1, up).status == "healthy" and status.health(full, 1, up).embedder
    assert status.readiness(full, 1)[0]
    replicated = [state("a", [0, 1, 2, 3]), state("b", None)]
    body = status.health(replicated, 1, none)
    assert body.status == "degraded" and body.coverage == 1.0 and body.shards.down == 1
    half = [state("a", [0, 1]), state("b", None)]
    body = status.health(half, 1, up)
    assert body.status == "degraded" and body.coverage == 0.5 and body.embedder
    # a router that can answer (flagged partial answers) is ready: the default
    assert status.readiness(half, 1)[0]
    assert not status.readiness(half, 1, min_coverage=1.0)[0]  # the strict opt-in
    assert status.health([state("b", None)], 1, none).status == "unhealthy"
    assert not status.readiness([state("b", None)], 1)[0]  # nothing served: not ready
    assert status.health(full, 0, none).status == "unhealthy"  # not polled yet


def test_a_dead_embedder_degrades_health_but_not_readiness() -> None:
    full = [state("a", [0, 1]), state("b", [2, 3])]
    dead = EmbedderState(configured=True, up=False, error="unreachable (refused)")
    body = status.health(full, 1, dead)
    assert body.status == "degraded" and not body.embedder and body.embedder_configured
    assert "embedder is down" in body.detail and "refused" in body.detail
    assert body.embedder_error == "unreachable (refused)"
    assert status.readiness(full, 1)[0]


def test_stats_lists_each_shard_and_the_totals() -> None:
    body = status.stats([state("a", [0, 1]), state("b", [2, 3]), state("c", None)], now=2.5)
    assert body.total_vectors == 40 and body.partitions == 4 and body.complete
    assert [s.state for s in body.shards] == ["up", "up", "down"]
    assert body.shards[1].ready == [2, 3] and body.shards[0].last_seen_s == 2.5
    assert body.versions[0].version == VERSION and body.model == "test" and body.dim == 8
