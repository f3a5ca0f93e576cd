"""The chart starts each role the way `simsearch up` does: same command, same variables.

`simsearch up` takes its commands and environments from `simsearch.local.roles`; here the
rendered chart's containers are compared with them. A variable the local mode sets must be
set by the chart too (or its Kubernetes equivalent, `CLUSTER_EQUIVALENTS`), every SIMSEARCH_*
variable the chart sets must be a real setting of that role, and the chart's environment
must pass the role's own start-up validation.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from simsearch.cli import build_parser
from simsearch.common.settings import ENV_PREFIX
from simsearch.embedder.settings import EmbedderSettings
from simsearch.local.roles import (
    CLUSTER_EQUIVALENTS,
    SERVE_ARGS,
    embedder_env,
    indexer_args,
    router_env,
    shard_env,
)
from simsearch.router.settings import RouterSettings
from simsearch.shard.settings import ShardSettings
from tests.support.helm import (
    SCENARIOS,
    containers,
    pod_specs,
    render,
    resolved_env,
    role_container,
    role_workload,
)

ROLES: dict[str, type[BaseSettings]] = {
    "shard": ShardSettings,
    "router": RouterSettings,
    "embedder": EmbedderSettings,
}
FOLDER = Path("/state")


def local_env(role: str, collections: int = 1) -> dict[str, str]:
    """What `simsearch up` sets; with several collections the router has no images root
    (each collection's manifest says where its images are) and the embedder one per each."""
    if role == "shard":
        return shard_env("s3://b/index", "default", 0, FOLDER)
    if role == "router":
        images = "s3://b/images" if collections == 1 else ""
        return router_env("s3://b/index", images, "default", "http://e:8001", FOLDER)
    return embedder_env(*(f"s3://b/images-{i}" for i in range(collections)))


def collections_in(scenario: Path) -> int:
    values = yaml.safe_load(scenario.read_text()) or {}
    return max(1, len(values.get("collections") or []))


def settings_fields(cls: type[BaseSettings]) -> set[str]:
    return {ENV_PREFIX + name.upper() for name in cls.model_fields}


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[p.stem for p in SCENARIOS])
@pytest.mark.parametrize("role", sorted(ROLES))
def test_chart_runs_the_local_command_with_the_local_variables(role: str, scenario: Path) -> None:
    container = role_container(role, render(str(scenario)))
    assert "command" not in container  # the image's ENTRYPOINT is `simsearch`
    assert container["args"] == SERVE_ARGS[role]
    chart = {item["name"] for item in container["env"]}
    for name in local_env(role, collections_in(scenario)):
        equivalents = (name, *CLUSTER_EQUIVALENTS.get(name, ()))
        assert chart & set(equivalents), f"{role}: the chart sets none of {equivalents}"
    unknown = {n for n in chart if n.startswith(ENV_PREFIX)} - settings_fields(ROLES[role])
    assert not unknown, f"{role}: the chart sets variables no setting reads: {unknown}"


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[p.stem for p in SCENARIOS])
@pytest.mark.parametrize("role", sorted(ROLES))
def test_chart_environment_passes_the_roles_start_up_validation(
    role: str, scenario: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    objects = render(str(scenario))
    cls = ROLES[role]
    workload = role_workload(role, objects)
    last = max(1, workload["spec"].get("replicas", 1)) - 1  # the last pod of the set
    pod_name = f"{workload['metadata']['name']}-{last}"
    for name in [n for n in os.environ if n.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name)
    container = role_container(role, objects)
    for name, value in resolved_env(container, pod_name).items():
        if name == "SIMSEARCH_API_KEYS_FILE":  # a file of the mounted Secret volume
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert str(Path(value).parent) in mounts, f"{role}: the key file is not mounted"
            value = str(tmp_path / "keys")
            Path(value).write_text("admin:placeholder\n")
        monkeypatch.setenv(name, value)
    settings: Any = cls()
    if role == "shard":
        assert settings.ordinal == last  # from the pod name, as SIMSEARCH_SHARD_ORDINAL locally
    if role == "router":
        assert settings.discovery in ("kubernetes", "dns")


def test_shared_values_are_equal_where_they_mean_the_same() -> None:
    """Index name and URI forms match what local mode passes."""
    objects = render(str(next(p for p in SCENARIOS if p.stem == "minio-values")))
    shard = {e["name"]: e.get("value") for e in role_container("shard", objects)["env"]}
    router = {e["name"]: e.get("value") for e in role_container("router", objects)["env"]}
    assert shard["SIMSEARCH_INDEX"] == router["SIMSEARCH_INDEX"] == "default"
    assert shard["SIMSEARCH_STORE"] == router["SIMSEARCH_STORE"] == "s3://photos"
    assert router["SIMSEARCH_IMAGES_ROOT"] == "s3://photos/images"
    embedder = {e["name"]: e.get("value") for e in role_container("embedder", objects)["env"]}
    assert embedder["SIMSEARCH_ALLOWED_ROOTS"] == router["SIMSEARCH_IMAGES_ROOT"]  # what it indexes
    assert router["SIMSEARCH_EMBEDDER_URL"].endswith("-embedder:8001")


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_indexer_job_runs_the_local_build_command(scenario: Path) -> None:
    objects = render(str(scenario))
    local = indexer_args("s3://b/images", "s3://b/index", "default", "http://e", 64, FOLDER)
    jobs = [  # -indexer, or -indexer-<collection> for each of `collections`
        o
        for o in objects
        if o["kind"] in ("Job", "CronJob") and "-indexer" in o["metadata"]["name"]
    ]
    assert len(jobs) >= collections_in(scenario)
    for job in jobs:
        build = containers(pod_specs(job)[0])[0]["args"]  # a CronJob builds in its init container
        flags = {a for a in build if a.startswith("--")}
        assert {a for a in local if a.startswith("--")} <= flags
        parsed = build_parser().parse_args(build)
        assert parsed.images.startswith("s3://") and parsed.store.startswith("s3://")
