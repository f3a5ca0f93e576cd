"""Shard identity and topology: ordinals from pod names, the file source, settings refusals."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from simsearch.common.errors import ConfigError
from simsearch.common.ordinal import parse_ordinal
from simsearch.common.settings import load_settings
from simsearch.shard.settings import ShardSettings
from simsearch.shard.topology import FileTopology, StaticTopology, TopologyUnknown


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No identity leaks in from the machine running the tests."""
    for name in ("HOSTNAME", "SIMSEARCH_POD_NAME", "SIMSEARCH_SHARD_ORDINAL", "SIMSEARCH_STORE"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("name", "ordinal"),
    [
        ("release-shard-3", 3),
        ("simsearch-shard-0", 0),
        ("a-b-c-shard-12", 12),
        ("shard-007", 7),
        (" my-shard-4\n", 4),
        ("laptop", None),
        ("shard-", None),
        ("17", None),
        ("release-shard-3a", None),
        ("release-shard-1234567890", None),  # more digits than any StatefulSet has
    ],
)
def test_ordinal_is_the_pod_name_suffix(name: str, ordinal: int | None) -> None:
    assert parse_ordinal(name) == ordinal


def test_static_topology_refuses_zero() -> None:
    assert StaticTopology(3).replicas() == 3
    with pytest.raises(ConfigError, match="SIMSEARCH_REPLICAS"):
        StaticTopology(0)


def test_file_topology_follows_the_file_and_keeps_the_last_good_value(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "topology.json"
    path.write_text(json.dumps({"replicas": 2}))
    topology = FileTopology(path)
    assert topology.replicas() == 2
    path.write_text(json.dumps({"replicas": 5}))
    assert topology.replicas() == 5
    with caplog.at_level(logging.WARNING):
        for broken in ('{"replicas": ', '{"replicas": 0}', '{"replicas": true}', "[3]"):
            path.write_text(broken)
            assert topology.replicas() == 5
        path.unlink()
        assert topology.replicas() == 5
    assert "keeping replicas=5" in caplog.text
    path.write_text(json.dumps({"replicas": 1}))
    assert topology.replicas() == 1


def test_file_topology_waits_for_its_file(tmp_path: Path) -> None:
    path = tmp_path / "topology.json"
    topology = FileTopology(path)  # `simsearch up` writes it after spawning the shards
    with pytest.raises(TopologyUnknown, match="missing"):
        topology.replicas()
    path.write_text('{"replicas": 4}')
    assert topology.replicas() == 4


def test_file_topology_in_a_missing_folder_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SIMSEARCH_TOPOLOGY_FILE"):
        FileTopology(tmp_path / "nowhere" / "topology.json")


def test_settings_need_a_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMSEARCH_SHARD_ORDINAL", "0")
    with pytest.raises(ConfigError, match=r"SIMSEARCH_STORE: .*required"):
        load_settings(ShardSettings)


def test_ordinal_from_env_pod_name_or_hostname(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMSEARCH_STORE", "file:///data")
    monkeypatch.setenv("SIMSEARCH_REPLICAS", "8")
    monkeypatch.setenv("HOSTNAME", "rel-shard-2")
    assert load_settings(ShardSettings).ordinal == 2
    monkeypatch.setenv("SIMSEARCH_POD_NAME", "rel-shard-5")
    assert load_settings(ShardSettings).ordinal == 5
    monkeypatch.setenv("SIMSEARCH_SHARD_ORDINAL", "7")
    settings = load_settings(ShardSettings)
    assert settings.ordinal == 7
    assert settings.cache_path.name == "simsearch-shard-7"
    assert settings.port == 8002


def test_unknown_ordinal_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOSTNAME", "laptop")
    with pytest.raises(ConfigError, match="SIMSEARCH_SHARD_ORDINAL") as caught:
        load_settings(ShardSettings, store="file:///data")
    assert "'laptop'" in caught.value.reason


def test_static_ordinal_must_fit_the_replicas() -> None:
    with pytest.raises(ConfigError, match=r"SIMSEARCH_REPLICAS: .*at least 4 replicas"):
        load_settings(ShardSettings, store="/data", shard_ordinal=3, replicas=2)


def test_file_topology_needs_its_file() -> None:
    with pytest.raises(ConfigError, match="SIMSEARCH_TOPOLOGY_FILE"):
        load_settings(ShardSettings, store="/data", shard_ordinal=0, topology="file")
    settings = load_settings(
        ShardSettings, store="/data", shard_ordinal=4, topology="file", topology_file="/t.json"
    )
    assert settings.topology_file == Path("/t.json")  # ordinal 4 ≥ replicas is fine here
