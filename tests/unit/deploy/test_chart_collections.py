"""The chart's `collections`: one indexer Job per collection, a CronJob for each scheduled one.

Rendered with the real helm (`tests/support/helm.py`), like every chart test; the
scenario is `ci/collections-values.yaml` (two collections, one scheduled), which
`test_chart.py` also lints and validates against the Kubernetes schemas.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from simsearch.cli import build_parser
from tests.support.helm import CHART, containers, find, helm, pod_specs, render, template_text

SCENARIO = str(CHART / "ci" / "collections-values.yaml")
EMBEDDER = "http://demo-simsearch-embedder:8001"


def batch(objects: tuple[dict[str, Any], ...], kind: str) -> dict[str, dict[str, Any]]:
    """The indexer objects of `kind` by name."""
    return {
        o["metadata"]["name"]: o
        for o in objects
        if o["kind"] == kind and "-indexer" in o["metadata"]["name"]
    }


def build_args(obj: dict[str, Any]) -> list[str]:
    """The build container's arguments (a CronJob builds in its init container)."""
    args: list[str] = containers(pod_specs(obj)[0])[0]["args"]
    return args


def flags(args: list[str]) -> dict[str, str]:
    parsed = build_parser().parse_args(args)
    return {"images": parsed.images, "index": parsed.index, "embedder": parsed.embedder}


def env_of(objects: tuple[dict[str, Any], ...], kind: str, suffix: str) -> dict[str, Any]:
    container = containers(pod_specs(find(objects, kind, suffix))[0])[0]
    return {e["name"]: e.get("value") for e in container["env"]}


def test_one_hook_job_per_collection_with_its_name_and_images() -> None:
    jobs = batch(render(SCENARIO), "Job")
    assert set(jobs) == {"demo-simsearch-indexer-default", "demo-simsearch-indexer-products"}
    assert flags(build_args(jobs["demo-simsearch-indexer-default"])) == {
        "images": "s3://company-media/photos",
        "index": "default",
        "embedder": EMBEDDER,
    }
    assert flags(build_args(jobs["demo-simsearch-indexer-products"])) == {
        "images": "s3://company-media/catalogue/images",
        "index": "products",
        "embedder": EMBEDDER,
    }
    for job in jobs.values():
        assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"


def test_a_cronjob_only_for_the_scheduled_collection_builds_then_collects_it() -> None:
    crons = batch(render(SCENARIO), "CronJob")
    assert list(crons) == ["demo-simsearch-indexer-products"]
    cron = crons["demo-simsearch-indexer-products"]
    assert cron["spec"]["schedule"] == "30 2 * * *"
    assert flags(build_args(cron))["index"] == "products"
    assert flags(build_args(cron))["images"] == "s3://company-media/catalogue/images"
    gc = pod_specs(cron)[0]["containers"][0]["args"]
    assert gc[:2] == ["index", "gc"] and gc[gc.index("--index") + 1] == "products"


def test_the_roles_see_every_collection() -> None:
    objects = render(SCENARIO)
    embedder = env_of(objects, "Deployment", "-embedder")
    roots = embedder["SIMSEARCH_ALLOWED_ROOTS"].split(",")
    assert roots == ["s3://company-media/photos", "s3://company-media/catalogue/images"]
    router = env_of(objects, "Deployment", "-router")
    assert router["SIMSEARCH_INDEX"] == "default"
    assert "SIMSEARCH_IMAGES_ROOT" not in router  # each collection's manifest source
    shard = env_of(objects, "StatefulSet", "-shard")
    assert "SIMSEARCH_COLLECTIONS" not in shard  # shards discover the collections


def test_the_single_index_renders_as_before(tmp_path: Path) -> None:
    """No `collections`: one Job named -indexer over s3.imagesPrefix, no CronJob."""
    empty = tmp_path / "empty-values.yaml"
    empty.write_text("collections: []\n")
    assert template_text("-f", str(empty)) == template_text()
    objects = render(None)
    assert list(batch(objects, "CronJob")) == []
    jobs = batch(objects, "Job")
    assert list(jobs) == ["demo-simsearch-indexer"]
    assert build_args(jobs["demo-simsearch-indexer"]) == [
        "index", "build", "--images", "s3://simsearch/images", "--store", "s3://simsearch",
        "--index", "default", "--embedder", EMBEDDER, "--partitions", "64",
        "--workdir", "/work", "--no-progress", "--allow-empty",
    ]  # fmt: skip
    router = env_of(objects, "Deployment", "-router")
    assert router["SIMSEARCH_IMAGES_ROOT"] == "s3://simsearch/images"
    embedder = env_of(objects, "Deployment", "-embedder")
    assert embedder["SIMSEARCH_ALLOWED_ROOTS"] == "s3://simsearch/images"
    cron = batch(render(None, "indexer.cron.enabled=true"), "CronJob")
    assert list(cron) == ["demo-simsearch-indexer"]  # the one index's CronJob, as before


def test_indexer_cron_schedules_the_collections_without_a_schedule() -> None:
    crons = batch(render(SCENARIO, "indexer.cron.enabled=true"), "CronJob")
    assert {name: c["spec"]["schedule"] for name, c in crons.items()} == {
        "demo-simsearch-indexer-default": "0 * * * *",
        "demo-simsearch-indexer-products": "30 2 * * *",
    }


def test_a_collection_with_its_own_model_embeds_in_the_indexer() -> None:
    objects = render(SCENARIO, "collections[1].model=resnet50")
    args = build_args(find(objects, "Job", "-indexer-products"))
    parsed = build_parser().parse_args(args)
    assert parsed.model == "resnet50" and parsed.embedder is None
    assert build_parser().parse_args(build_args(find(objects, "Job", "-indexer-default"))).embedder


def test_underscores_become_dashes_in_object_names() -> None:
    objects = render(SCENARIO, "collections[1].name=spare_parts", "collections[1].schedule=@daily")
    job = find(objects, "Job", "-indexer-spare-parts")
    assert flags(build_args(job))["index"] == "spare_parts"
    assert find(objects, "CronJob", "-indexer-spare-parts")["spec"]["schedule"] == "@daily"


def _template(*sets: str) -> str:
    args = ["template", "t", str(CHART), "-f", SCENARIO]
    for item in sets:
        args += ["--set", item]
    done = helm(*args)
    assert done.returncode != 0, "helm accepted it"
    return done.stderr


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("collections[1].name=Products", "/collections/1/name"),
        ("collections[1].images=/local/folder", "/collections/1/images"),
        ("collections[1].schedule=hourly", "/collections/1/schedule"),
        ("collections[1].bogus=1", "bogus"),
        ("collections[2].name=extra", "images"),  # required
    ],
)
def test_the_schema_refuses_bad_collections(setting: str, named: str) -> None:
    assert named in _template(setting)


def test_two_collections_with_one_object_name_are_refused() -> None:
    stderr = _template("collections[1].name=a_b", "collections[2].name=a-b",
                       "collections[2].images=s3://xyz/y")  # fmt: skip
    assert "a_b" in stderr and "a-b" in stderr


def test_the_default_collection_must_be_one_of_them() -> None:
    stderr = _template("indexName=photos")
    assert "indexName" in stderr and "photos" in stderr and "default, products" in stderr


def test_the_scenario_values_pass_the_schema_as_json() -> None:
    """What `helm lint --strict` validates is the file itself (no --set)."""
    done = helm("lint", "--strict", str(CHART), "-f", SCENARIO)
    assert done.returncode == 0, done.stdout + done.stderr
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["properties"]["collections"]["items"]["required"] == ["name", "images"]
