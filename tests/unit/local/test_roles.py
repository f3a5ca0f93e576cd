"""Local mode's environments (`local/roles.py`) are real settings of each role.

`roles.py` writes them as setting names because it may not import the roles' classes;
here every variable is checked against the class it configures, and the class is built
from that environment exactly as the role builds it at start.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from simsearch.cli import build_parser
from simsearch.common.settings import ENV_PREFIX
from simsearch.embedder.settings import EmbedderSettings
from simsearch.indexer.commands import settings_of
from simsearch.local.roles import (
    CLUSTER_EQUIVALENTS,
    embedder_env,
    indexer_args,
    router_env,
    shard_env,
)
from simsearch.router.settings import RouterSettings
from simsearch.shard.settings import ShardSettings


def variables(cls: type[BaseSettings]) -> set[str]:
    return {ENV_PREFIX + name.upper() for name in cls.model_fields}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name)


def envs(folder: Path) -> list[tuple[type[BaseSettings], dict[str, str]]]:
    return [
        (ShardSettings, shard_env("file:///s", "default", 1, folder, replication=2)),
        (RouterSettings, router_env("file:///s", "file:///i", "default", "http://e:1", folder)),
        (RouterSettings, router_env("file:///s", "", "default", "", folder)),  # features.h5
        (EmbedderSettings, embedder_env("file:///i")),
    ]


def test_every_local_variable_is_a_setting_the_role_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for cls, env in envs(tmp_path):
        unknown = set(env) - variables(cls)
        assert not unknown, f"{cls.__name__}: {unknown} are no settings"
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        cls()  # the role's own start-up validation
        for name in env:
            monkeypatch.delenv(name)


def test_the_values_are_what_the_roles_need(tmp_path: Path) -> None:
    shard = shard_env("file:///s", "default", 1, tmp_path, replication=2)
    assert shard["SIMSEARCH_SHARD_ORDINAL"] == "1" and shard["SIMSEARCH_POLL_S"] == "1"
    assert shard["SIMSEARCH_TOPOLOGY_FILE"] == str(tmp_path / "topology.json")
    router = router_env("file:///s", "", "default", "", tmp_path)
    assert "SIMSEARCH_EMBEDDER_URL" not in router and "SIMSEARCH_IMAGES_ROOT" not in router
    # without the images as a root, the local embedder would refuse every key of the build
    assert embedder_env("file:///i") == {"SIMSEARCH_ALLOWED_ROOTS": "file:///i"}
    # one root per collection; none (an imported features.h5): no embedder is started
    both = embedder_env("file:///i", "", "/j")
    assert both == {"SIMSEARCH_ALLOWED_ROOTS": "file:///i,/j"}
    assert len(EmbedderSettings(allowed_roots=both["SIMSEARCH_ALLOWED_ROOTS"]).roots()) == 2
    assert embedder_env() == embedder_env("") == {}
    assert EmbedderSettings(allowed_roots="file:///i").roots()
    assert EmbedderSettings().roots() == ()


def test_cluster_equivalents_are_settings() -> None:
    for local, cluster in CLUSTER_EQUIVALENTS.items():
        assert local in variables(ShardSettings) | variables(RouterSettings)
        assert set(cluster) <= variables(ShardSettings) | variables(RouterSettings)


def test_the_local_build_command_loads_the_indexer_settings(tmp_path: Path) -> None:
    argv = indexer_args("file:///i", "file:///s", "idx", "http://e:1", 16, tmp_path)
    settings = settings_of(build_parser().parse_args(argv))
    assert (settings.images_root, settings.store, settings.index) == (
        "file:///i",
        "file:///s",
        "idx",
    )
    assert (settings.partitions, settings.embedder_url, settings.workdir) == (
        16,
        "http://e:1",
        tmp_path,
    )
