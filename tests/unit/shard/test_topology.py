"""Shard identity and topology: ordinals from pod names, the static and file sources.

The settings that resolve the ordinal are tested in `tests/unit/shard/test_settings.py`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from simsearch.common.errors import ConfigError
from simsearch.common.ordinal import parse_ordinal
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
