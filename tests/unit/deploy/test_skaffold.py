"""skaffold.yaml, checked without Skaffold, Docker or a cluster.

The file is parsed with yaml; every artifact must name a real target of the Dockerfile and a
repository the chart's values.yaml uses, the helm release must point at the chart and at
values files that exist, and every `setValueTemplates` key must be a real value of the
chart mapped to the right artifact (with the artifact name sanitised as Skaffold does).
Profiles are applied the way Skaffold applies them (JSON patches) and the result is
rendered with the real helm binary, so a profile that set an unknown or mistyped value
would fail the chart's values.schema.json here.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
import yaml

from tests.support.helm import CHART, containers, find, pod_specs, render, template_text
from tests.support.paths import ROOT

SKAFFOLD = ROOT / "skaffold.yaml"
DOCKERFILE = ROOT / "Dockerfile"
ROLES = ("router", "shard", "embedder", "indexer")
CUDA_INDEX = "https://download.pytorch.org/whl/cu128"
# what stands in for Skaffold's computed image values when the templates are expanded here
FAKE_TAG = "dev-0123abc"
FAKE_DIGEST = "sha256:" + "ab" * 32


def load() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(SKAFFOLD.read_text())
    return config


def dockerfile_targets() -> set[str]:
    """Stage names of the Dockerfile (`FROM <image> AS <name>`)."""
    pattern = re.compile(r"^\s*FROM\s+\S+\s+AS\s+(\S+)\s*$", re.IGNORECASE | re.MULTILINE)
    return set(pattern.findall(DOCKERFILE.read_text()))


def chart_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return values


def image_repositories(node: Any) -> set[str]:
    """Every `<...>.image.repository` in the chart's values."""
    found: set[str] = set()
    if isinstance(node, dict):
        image = node.get("image")
        if isinstance(image, dict) and isinstance(image.get("repository"), str):
            found.add(image["repository"])
        for child in node.values():
            found |= image_repositories(child)
    return found


def sanitise(image: str) -> str:
    """Skaffold's artifact name in templates: `/`, `-`, `.` and `:` become `_`."""
    return re.sub(r"[/\-.:]", "_", image)


def release(config: dict[str, Any]) -> dict[str, Any]:
    releases = config["deploy"]["helm"]["releases"]
    assert len(releases) == 1, "one helm release"
    only: dict[str, Any] = releases[0]
    return only


def artifact_of(config: dict[str, Any], role: str) -> dict[str, Any]:
    hits = [a for a in config["build"]["artifacts"] if a["docker"]["target"] == role]
    assert len(hits) == 1, f"{len(hits)} artifacts build the {role} target"
    only: dict[str, Any] = hits[0]
    return only


def json_pointer(path: str) -> list[str]:
    return [part.replace("~1", "/").replace("~0", "~") for part in path.split("/")[1:]]


def apply_patches(config: dict[str, Any], patches: list[dict[str, Any]]) -> dict[str, Any]:
    """A profile's JSON patches (RFC 6902 add/replace/remove), as Skaffold applies them."""
    out = copy.deepcopy(config)
    for patch in patches:
        op = patch.get("op", "replace")  # Skaffold's default op
        *parents, last = json_pointer(patch["path"])
        node: Any = out
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            index = len(node) if last == "-" else int(last)
            if op == "add":
                node.insert(index, patch["value"])
            elif op == "replace":
                node[index] = patch["value"]
            else:
                assert op == "remove", op
                del node[index]
        else:
            assert isinstance(node, dict), f"{patch['path']}: parent is not an object"
            if op in ("replace", "remove"):
                assert last in node, f"{op} {patch['path']}: no such member"
            if op == "remove":
                del node[last]
            else:
                assert op in ("add", "replace"), op
                node[last] = patch["value"]
    return out


def profile(config: dict[str, Any], name: str) -> dict[str, Any]:
    hits = [p for p in config.get("profiles", []) if p["name"] == name]
    assert len(hits) == 1, f"profile {name}: {len(hits)} found"
    only: dict[str, Any] = hits[0]
    return only


def with_profile(config: dict[str, Any], name: str) -> dict[str, Any]:
    return apply_patches(config, profile(config, name).get("patches", []))


def expand(template: str) -> str:
    """A setValueTemplates value with Skaffold's image variables filled in."""

    def one(match: re.Match[str]) -> str:
        field, name = match.group(1), match.group(2)
        image = next(i for i in known_images() if sanitise(i) == name)
        return {"IMAGE_REPO": image, "IMAGE_TAG": FAKE_TAG, "IMAGE_DIGEST": FAKE_DIGEST}[field]

    pattern = r"\{\{\s*\.(IMAGE_REPO|IMAGE_TAG|IMAGE_DIGEST)_(\w+)\s*\}\}"
    return re.sub(pattern, one, template).removesuffix("@")  # Skaffold trims a bare "@"


def known_images() -> list[str]:
    return [a["image"] for a in load()["build"]["artifacts"]]


def helm_sets(config: dict[str, Any]) -> list[str]:
    """The `--set` arguments Skaffold would pass (templates expanded with fake images)."""
    rel = release(config)
    sets = [f"{k}={v}" for k, v in sorted((rel.get("setValues") or {}).items())]
    sets += [f"{k}={expand(v)}" for k, v in sorted(rel["setValueTemplates"].items())]
    return sets


def render_config(config: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    rel = release(config)
    args: list[str] = []
    for values_file in rel["valuesFiles"]:
        args += ["-f", str(ROOT / values_file)]
    text = template_text(*args, *(f"--set={s}" for s in helm_sets(config)), release=rel["name"])
    return tuple(d for d in yaml.safe_load_all(text) if d)


# ---- the file itself -----------------------------------------------------------------------


def test_schema_version_and_kind() -> None:
    config = load()
    assert re.fullmatch(r"skaffold/v4beta\d+", config["apiVersion"]), config["apiVersion"]
    assert config["kind"] == "Config"


def test_every_artifact_builds_a_dockerfile_target() -> None:
    targets = dockerfile_targets()
    assert set(ROLES) <= targets, targets
    for artifact in load()["build"]["artifacts"]:
        docker = artifact["docker"]
        assert (ROOT / artifact.get("context", ".") / docker["dockerfile"]) == DOCKERFILE
        assert docker["target"] in targets, f"{artifact['image']}: no stage {docker['target']}"


def test_one_artifact_per_role_with_the_repository_of_values_yaml() -> None:
    config, values = load(), chart_values()
    repositories = image_repositories(values)
    images = [a["image"] for a in config["build"]["artifacts"]]
    assert len(images) == len(set(images)) == len(ROLES)
    for image in images:
        assert image in repositories, f"{image} is not a repository in values.yaml"
    for role in ROLES:
        assert artifact_of(config, role)["image"] == values[role]["image"]["repository"]


def test_the_release_points_at_the_chart_and_existing_values_files() -> None:
    rel = release(load())
    assert rel["name"] == "simsearch"
    chart = ROOT / rel["chartPath"]
    assert chart.resolve() == CHART.resolve() and (chart / "Chart.yaml").is_file()
    assert rel["valuesFiles"] == ["charts/simsearch/ci/dev-values.yaml"]
    for values_file in rel["valuesFiles"]:
        assert (ROOT / values_file).is_file(), values_file


def test_each_role_image_is_set_from_its_own_artifact() -> None:
    config = load()
    templates = release(config)["setValueTemplates"]
    for role in ROLES:
        name = sanitise(artifact_of(config, role)["image"])
        assert templates[f"{role}.image.repository"] == f"{{{{.IMAGE_REPO_{name}}}}}"
        assert templates[f"{role}.image.tag"].startswith(f"{{{{.IMAGE_TAG_{name}}}}}")
    for key, value in templates.items():
        for variable in re.findall(r"\.IMAGE_\w+?_(\w+)\}\}", value):
            assert variable in {sanitise(i) for i in known_images()}, (key, value)


def test_every_set_key_is_a_value_of_the_chart() -> None:
    values = chart_values()
    config = load()
    for name in [None, *(p["name"] for p in config["profiles"])]:
        effective = config if name is None else with_profile(config, name)
        rel = release(effective)
        for key in [*(rel.get("setValues") or {}), *rel["setValueTemplates"]]:
            node: Any = values
            for part in key.split("."):
                assert isinstance(node, dict) and part in node, f"{name}: {key} not in values"
                node = node[part]


def test_the_tag_policy_never_makes_a_numeric_tag() -> None:
    """`helm --set x.tag=1234567` would be a number, which values.schema.json refuses."""
    git = load()["build"]["tagPolicy"]["gitCommit"]
    assert re.match(r"[A-Za-z]", git["prefix"]), git


# ---- rendered with helm ---------------------------------------------------------------------


def test_the_deployed_images_are_the_built_artifacts() -> None:
    config = load()
    objects = render_config(config)
    wanted = {
        "Deployment": {"-router": "router", "-embedder": "embedder"},
        "StatefulSet": {"-shard": "shard"},
        "Job": {"-indexer": "indexer"},
    }
    for kind, by_suffix in wanted.items():
        for suffix, role in by_suffix.items():
            workload = find(objects, kind, suffix)
            image = containers(pod_specs(workload)[0])[0]["image"]
            built = artifact_of(config, role)["image"]
            assert image == f"{built}:{FAKE_TAG}@{FAKE_DIGEST}", (kind, suffix, image)
    test_pod = find(objects, "Pod", "-test")
    assert containers(test_pod["spec"])[0]["image"].startswith(
        artifact_of(config, "router")["image"]
    )


def test_port_forward_targets_the_router_service() -> None:
    config = load()
    forwards = config["portForward"]
    assert len(forwards) == 1
    forward = forwards[0]
    assert forward["resourceType"].lower() == "service"
    assert (forward["port"], forward["localPort"]) == (80, 8000)
    services = [o for o in render_config(config) if o["kind"] == "Service"]
    router = [s for s in services if s["metadata"]["name"] == forward["resourceName"]]
    assert len(router) == 1, [s["metadata"]["name"] for s in services]
    assert router[0]["spec"]["selector"]["app.kubernetes.io/component"] == "router"
    assert [p["port"] for p in router[0]["spec"]["ports"]] == [forward["port"]]


def test_the_dev_values_are_the_development_install() -> None:
    objects = render(str(CHART / "ci" / "dev-values.yaml"))
    assert find(objects, "Deployment", "-router")["spec"]["replicas"] == 1
    shard = find(objects, "StatefulSet", "-shard")
    assert shard["spec"]["replicas"] == 2
    env = {
        e["name"]: e.get("value") for e in containers(shard["spec"]["template"]["spec"])[0]["env"]
    }
    assert env["SIMSEARCH_TOPOLOGY"] == "kubernetes"
    embedder = containers(pod_specs(find(objects, "Deployment", "-embedder"))[0])[0]
    assert "nvidia.com/gpu" not in embedder["resources"]["limits"]
    assert {e["name"]: e.get("value") for e in embedder["env"]}["SIMSEARCH_DEVICE"] == "cpu"
    find(objects, "Deployment", "-minio")
    find(objects, "Job", "-indexer")


# ---- profiles -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gpu", "minio", "no-index"])
def test_profile_exists_and_renders(name: str) -> None:
    assert render_config(with_profile(load(), name))


def test_gpu_profile_builds_cuda_torch_and_schedules_the_embedder_on_a_gpu() -> None:
    base, config = load(), with_profile(load(), "gpu")
    for role in ROLES:
        args = artifact_of(config, role)["docker"].get("buildArgs", {})
        if role in ("embedder", "indexer"):
            assert args == {"TORCH_INDEX_URL": CUDA_INDEX}, role
        else:
            assert "TORCH_INDEX_URL" not in args, role
        assert "buildArgs" not in artifact_of(base, role)["docker"], role
    assert release(config)["setValues"]["embedder.gpu.enabled"] == "true"
    embedder = find(render_config(config), "Deployment", "-embedder")
    container = containers(pod_specs(embedder)[0])[0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {e["name"]: e.get("value") for e in container["env"]}["SIMSEARCH_DEVICE"] == "cuda"


def test_the_cuda_index_is_an_arg_the_heavy_stage_declares() -> None:
    heavy = DOCKERFILE.read_text().split("AS heavy", 1)[1].split("\nFROM ", 1)[0]
    assert re.search(r"^ARG TORCH_INDEX_URL=", heavy, re.MULTILINE)


def test_minio_profile_turns_on_the_bundled_minio() -> None:
    config = with_profile(load(), "minio")
    assert release(config)["setValues"]["minio.enabled"] == "true"
    objects = render_config(config)
    find(objects, "Deployment", "-minio")
    env = containers(pod_specs(find(objects, "Deployment", "-router"))[0])[0]["env"]
    endpoint = {e["name"]: e.get("value") for e in env}["SIMSEARCH_S3_ENDPOINT_URL"]
    assert endpoint == "http://simsearch-minio:9000"


def test_no_index_profile_leaves_out_only_the_indexer_hook() -> None:
    base = {(o["kind"], o["metadata"]["name"]) for o in render_config(load())}
    objects = render_config(with_profile(load(), "no-index"))
    assert release(with_profile(load(), "no-index"))["setValues"]["indexer.hook"] == "false"
    assert base - {(o["kind"], o["metadata"]["name"]) for o in objects} == {
        ("Job", "simsearch-indexer")
    }
    find(objects, "Job", "-minio-bucket")  # the bucket is still made, ready for `mc cp`


def test_profiles_combine() -> None:
    config = load()
    both = apply_patches(with_profile(config, "gpu"), profile(config, "minio")["patches"])
    assert {"embedder.gpu.enabled", "minio.enabled"} <= set(release(both)["setValues"])
    assert render_config(both)


def test_the_patch_helper_is_not_vacuous() -> None:
    with pytest.raises(AssertionError):
        apply_patches({"a": {}}, [{"op": "replace", "path": "/a/b", "value": 1}])
    with pytest.raises(KeyError):
        apply_patches({"a": {}}, [{"op": "add", "path": "/x/b", "value": 1}])
