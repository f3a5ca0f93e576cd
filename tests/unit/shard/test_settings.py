"""The shard's settings: the ordinal's sources, start-up refusals, the shared limits.

The environment is read by the settings class only (`HOSTNAME` is a declared field, not
an `os.environ` read in a validator), so these tests set variables and build the class.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from simsearch.common.errors import ConfigError
from simsearch.common.limits import MAX_CANDIDATES
from simsearch.common.settings import load_settings
from simsearch.router.settings import RouterSettings
from simsearch.shard.settings import ShardSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No identity leaks in from the machine running the tests."""
    for name in ("HOSTNAME", "SIMSEARCH_POD_NAME", "SIMSEARCH_SHARD_ORDINAL", "SIMSEARCH_STORE"):
        monkeypatch.delenv(name, raising=False)


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


def test_pod_name_wins_over_hostname_and_falls_back_to_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same precedence as when the validator read `os.environ` by hand: the pod name's
    suffix first, HOSTNAME's when the pod name has none."""
    monkeypatch.setenv("SIMSEARCH_STORE", "file:///data")
    monkeypatch.setenv("SIMSEARCH_REPLICAS", "8")
    monkeypatch.setenv("HOSTNAME", "rel-shard-2")
    monkeypatch.setenv("SIMSEARCH_POD_NAME", "laptop")  # no suffix: HOSTNAME's counts
    settings = load_settings(ShardSettings)
    assert (settings.ordinal, settings.hostname, settings.pod_name) == (2, "rel-shard-2", "laptop")
    monkeypatch.setenv("SIMSEARCH_POD_NAME", "rel-shard-6")
    assert load_settings(ShardSettings).ordinal == 6


def test_hostname_is_read_unprefixed_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """`HOSTNAME` is the OS's variable; a `SIMSEARCH_HOSTNAME` is nobody's and is ignored."""
    monkeypatch.setenv("SIMSEARCH_HOSTNAME", "rel-shard-1")
    with pytest.raises(ConfigError, match="SIMSEARCH_SHARD_ORDINAL"):
        load_settings(ShardSettings, store="file:///data")
    assert ShardSettings(store="/data", HOSTNAME="rel-shard-0").ordinal == 0


def test_router_and_shard_share_the_candidate_limit() -> None:
    """The router refuses k·refine over the shards' own limit: one constant sets both."""
    router = RouterSettings.model_fields["max_candidates"].default
    shard = ShardSettings.model_fields["max_candidates"].default
    assert router == shard == MAX_CANDIDATES
    built = load_settings(RouterSettings, shards="http://127.0.0.1:9")
    assert built.max_candidates == ShardSettings(store="/d", shard_ordinal=0).max_candidates
