"""The Helm chart, checked with the real helm binary and the Kubernetes JSON schemas.

Every scenario in charts/simsearch/ci/ is linted, rendered and validated object by object
against Kubernetes 1.30 and the newest version kubernetes-validate knows; then a policy
runs over every rendered object: resources, probes, the restricted securityContext,
least-privilege RBAC, version-free selectors and images from values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.support.helm import (
    CHART,
    SCENARIOS,
    containers,
    find,
    helm,
    pod_specs,
    render,
    template_text,
)

K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
# CRDs of the Prometheus Operator: no schema ships with kubernetes-validate
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
# Run-to-completion containers serve no traffic: Kubernetes ignores readiness for them and
# a liveness probe could only restart a build that is already bounded by backoffLimit.
BATCH_KINDS = {"Job", "CronJob", "Pod"}
# The verbs each role's code uses (shard/topology.py, router/discovery.py).
ALLOWED_RULES = {
    ("apps", "statefulsets"): {"get", "watch"},
    ("discovery.k8s.io", "endpointslices"): {"list", "watch"},
}
ids = [p.name.removesuffix("-values.yaml") for p in SCENARIOS]


def objects_of(scenario: Path) -> tuple[dict[str, Any], ...]:
    return render(str(scenario))


def test_every_scenario_of_the_issue_exists() -> None:
    wanted = {
        "default",
        "gpu",
        "minio",
        "external-s3",
        "ingress-tls",
        "one-shard",
        "eight-shards",
        "monitoring",
        "collections",
    }
    assert wanted <= set(ids)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=ids)
def test_helm_lint_strict(scenario: Path) -> None:
    done = helm("lint", "--strict", str(CHART), "-f", str(scenario))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=ids)
def test_rendered_objects_pass_the_kubernetes_schemas(scenario: Path, version: str) -> None:
    objects = objects_of(scenario)
    assert objects
    for obj in objects:
        if obj["kind"] in CRD_KINDS:
            assert obj["apiVersion"] == "monitoring.coreos.com/v1" and obj["spec"]
            continue
        kubernetes_validate.validate(obj, version, strict=True)


def test_the_validator_is_not_vacuous() -> None:
    """A field Kubernetes does not know must fail strict validation."""
    shard = find(render(None), "StatefulSet", "-shard")
    broken = yaml.safe_load(yaml.safe_dump(shard))
    broken["spec"]["replicaz"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)


def _check_container(where: str, c: dict[str, Any], pod: dict[str, Any], batch: bool) -> None:
    resources = c.get("resources", {})
    for part in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources.get(part, {})), f"{where}: {part}"
    if not batch:
        assert "livenessProbe" in c and "readinessProbe" in c, f"{where}: probes"
    sc = c.get("securityContext", {})
    pod_sc = pod.get("securityContext", {})
    assert sc.get("allowPrivilegeEscalation") is False, where
    assert sc.get("readOnlyRootFilesystem") is True, where
    assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
    assert sc.get("capabilities", {}).get("add") is None, where
    assert sc.get("privileged") is not True, where
    assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, where
    seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {}))
    assert seccomp.get("type") == "RuntimeDefault", where


@pytest.mark.parametrize("scenario", SCENARIOS, ids=ids)
def test_every_container_has_resources_probes_and_the_restricted_context(
    scenario: Path,
) -> None:
    checked = 0
    for obj in objects_of(scenario):
        for pod in pod_specs(obj):
            assert pod.get("hostNetwork") is not True and pod.get("hostPID") is not True
            for c in containers(pod):
                where = f"{obj['kind']}/{obj['metadata']['name']}/{c['name']}"
                _check_container(where, c, pod, obj["kind"] in BATCH_KINDS)
                checked += 1
    assert checked >= 4


@pytest.mark.parametrize("scenario", SCENARIOS, ids=ids)
def test_rbac_is_least_privilege(scenario: Path) -> None:
    for obj in objects_of(scenario):
        assert obj["kind"] not in ("ClusterRole", "ClusterRoleBinding"), obj["metadata"]
        if obj["kind"] != "Role":
            continue
        for rule in obj["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule.get(field, []), (obj["metadata"]["name"], rule)
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    allowed = ALLOWED_RULES.get((group, resource))
                    assert allowed is not None, f"{group}/{resource} is not used by the code"
                    assert set(rule["verbs"]) <= allowed, rule


def test_a_shard_may_read_only_its_own_statefulset() -> None:
    objects = render(None)
    role = find(objects, "Role", "-shard")
    sts = find(objects, "StatefulSet", "-shard")
    assert role["rules"][0]["resourceNames"] == [sts["metadata"]["name"]]


def test_static_topology_and_dns_discovery_need_no_rbac_and_no_token() -> None:
    objects = render(str(CHART / "ci" / "one-shard-values.yaml"))
    assert not [o for o in objects if o["kind"] in ("Role", "RoleBinding")]
    for obj in objects:
        for pod in pod_specs(obj):
            assert pod.get("automountServiceAccountToken") is False, obj["metadata"]["name"]


def _selectors(obj: dict[str, Any]) -> list[dict[str, str]]:
    spec = obj.get("spec", {})
    found = []
    if obj["kind"] in ("Deployment", "StatefulSet", "PodDisruptionBudget"):
        found.append(spec["selector"]["matchLabels"])
    if obj["kind"] == "Service" and "selector" in spec:
        found.append(spec["selector"])
    if obj["kind"] == "NetworkPolicy":
        found.append(spec["podSelector"]["matchLabels"])
        for rule in spec.get("ingress", []):
            found += [p["podSelector"]["matchLabels"] for p in rule["from"] if "podSelector" in p]
    if obj["kind"] == "StatefulSet":
        found += [t["metadata"].get("labels", {}) for t in spec.get("volumeClaimTemplates", [])]
    return found


@pytest.mark.parametrize("scenario", SCENARIOS, ids=ids)
def test_selectors_hold_no_version(scenario: Path) -> None:
    seen = 0
    for obj in objects_of(scenario):
        for selector in _selectors(obj):
            seen += 1
            assert "app.kubernetes.io/version" not in selector, obj["metadata"]["name"]
            assert "helm.sh/chart" not in selector, obj["metadata"]["name"]
    assert seen >= 5


def _chart_meta() -> dict[str, Any]:
    meta: dict[str, Any] = yaml.safe_load((CHART / "Chart.yaml").read_text())
    return meta


def _value_images(values: dict[str, Any], app_version: str) -> set[str]:
    images = set()
    for section in ("router", "shard", "embedder", "indexer", "minio", "tests"):
        image = values[section]["image"]
        images.add(f"{image['repository']}:{image['tag'] or app_version}")
    return images


@pytest.mark.parametrize("scenario", SCENARIOS, ids=ids)
def test_every_image_is_repository_and_tag_from_values(scenario: Path) -> None:
    app_version = _chart_meta()["appVersion"]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    allowed = _value_images(values, app_version)
    for obj in objects_of(scenario):
        for pod in pod_specs(obj):
            for c in containers(pod):
                assert c["image"] in allowed, c["image"]


def test_image_tags_default_to_app_version_and_follow_values() -> None:
    app_version = _chart_meta()["appVersion"]
    router = find(render(None), "Deployment", "-router")
    assert containers(router["spec"]["template"]["spec"])[0]["image"].endswith(f":{app_version}")
    custom = render(None, "router.image.repository=reg.local/r", "router.image.tag=9.9")
    router = find(custom, "Deployment", "-router")
    assert containers(router["spec"]["template"]["spec"])[0]["image"] == "reg.local/r:9.9"
    numeric = find(render(None, "router.image.tag=1234567"), "Deployment", "-router")
    assert containers(numeric["spec"]["template"]["spec"])[0]["image"].endswith(":1234567")


def test_config_changes_roll_the_pods() -> None:
    """checksum/config changes when a secret value changes."""

    def checksum(*sets: str) -> str:
        router = find(render(None, *sets), "Deployment", "-router")
        value: str = router["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        return value

    assert checksum("auth.apiKeys={a}") != checksum("auth.apiKeys={b}")


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("router.replicas=-1", "/router/replicas"),
        ("shard.replicas=-2", "/shard/replicas"),
        ("embedder.replicas=-1", "/embedder/replicas"),
        ("shard.bogus=1", "bogus"),
        ("surprise=1", "surprise"),
        ("router.ingress.hostz[0]=a", "hostz"),
        ("router.rateLimits.bogus=1", "bogus"),
        ("auth.keyFile.path=/x", "path"),
    ],
)
def test_schema_rejects_negative_counts_and_unknown_keys(setting: str, named: str) -> None:
    done = helm("template", "t", str(CHART), "--set", setting)
    assert done.returncode != 0
    assert named in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("shard.replicas=two", "/shard/replicas"),
        ("router.ingress.enabled=yes", "/router/ingress/enabled"),
        ("shard.topology=zookeeper", "/shard/topology"),
        ("router.timeoutMs=fast", "/router/timeoutMs"),
        ("router.rateLimits.admin.perKey=lots", "/router/rateLimits/admin/perKey"),
        ("router.rateLimits.enabled=maybe", "/router/rateLimits/enabled"),
        ("router.trustedProxies[0]=intranet", "/router/trustedProxies/0"),
        ("auth.adminKeys[0]=two words", "/auth/adminKeys/0"),
    ],
)
def test_schema_rejects_wrong_types(setting: str, named: str) -> None:
    done = helm("template", "t", str(CHART), "--set-string", setting)
    assert done.returncode != 0
    assert named in done.stderr, done.stderr


FREE_MAPS = {"requests", "limits", "labels", "nodeSelector", "annotations", "podAnnotations"}


def test_every_values_key_has_a_comment() -> None:
    """Each key has a `# --` comment above it (entries of free-form maps are data)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    parents: list[tuple[int, str]] = []
    for number, line in enumerate(lines):
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if stripped.startswith("- "):  # a list item: its fields are data
            parents = [(i, k) for i, k in parents if i < indent] + [(indent, "-")]
            continue
        if not stripped or stripped.startswith("#") or ":" not in stripped:
            continue
        parents = [(i, k) for i, k in parents if i < indent]
        key = stripped.split(":", 1)[0]
        inside_free_map = bool(parents) and parents[-1][1] in FREE_MAPS | {"-"}
        parents.append((indent, key))
        if inside_free_map:
            continue
        previous = lines[number - 1].strip()
        assert previous.startswith("# "), f"values.yaml:{number + 1} {key!r} has no comment"


def test_notes_tell_how_to_search_and_scale() -> None:
    done = helm("install", "demo", str(CHART), "--dry-run=client", "--namespace", "search")
    assert done.returncode == 0, done.stderr
    notes = done.stdout.split("NOTES:", 1)[1]
    assert "/search/image" in notes and "kubectl -n search scale statefulset/" in notes


def test_helm_test_pod_checks_the_router_health() -> None:
    text = template_text()
    pod = next(
        o
        for o in yaml.safe_load_all(text)
        if o and o["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"
    )
    script = " ".join(containers(pod["spec"])[0]["args"])
    router = find(render(None), "Service", "-router")
    assert f"{router['metadata']['name']}:80/health" in script


# ------------------------------------------------------------------ keys and rate limits


def env_of(objects: tuple[dict[str, Any], ...], kind: str, suffix: str) -> dict[str, Any]:
    """name -> value (or valueFrom) of the first container of a workload."""
    workload = find(objects, kind, suffix)
    env = containers(pod_specs(workload)[0])[0]["env"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in env}


def secret_data(objects: tuple[dict[str, Any], ...]) -> dict[str, str]:
    secret = find(objects, "Secret", "-api-keys")
    data: dict[str, str] = secret["stringData"]
    return data


def test_no_keys_by_default_and_rate_limits_on() -> None:
    objects = render(None)
    router = env_of(objects, "Deployment", "-router")
    shard = env_of(objects, "StatefulSet", "-shard")
    for env in (router, shard):
        assert not {"SIMSEARCH_API_KEYS", "SIMSEARCH_ADMIN_KEYS", "SIMSEARCH_API_KEYS_FILE"} & set(
            env
        )
    assert router["SIMSEARCH_RATE_LIMITS"] == "true"
    assert router["SIMSEARCH_RATE_VECTOR_SEARCH_PER_ADDRESS"] == "200/s:400"
    assert router["SIMSEARCH_RATE_IMAGE_SEARCH_PER_KEY"] == "20/s:40"
    assert router["SIMSEARCH_RATE_ADMIN_PER_ADDRESS"] == "10/m:5"
    assert "SIMSEARCH_TRUSTED_PROXIES" not in router
    assert not [o for o in objects if o["metadata"]["name"].endswith("-api-keys")]


def test_search_and_admin_keys_come_from_one_secret() -> None:
    objects = render(None, "auth.apiKeys={s1,s2}", "auth.adminKeys={a1}")
    assert secret_data(objects) == {"api-keys": "s1,s2", "admin-keys": "a1"}
    router = env_of(objects, "Deployment", "-router")
    shard = env_of(objects, "StatefulSet", "-shard")
    name = find(objects, "Secret", "-api-keys")["metadata"]["name"]
    assert router["SIMSEARCH_API_KEYS"]["secretKeyRef"] == {"name": name, "key": "api-keys"}
    for env in (router, shard):  # the shards' /admin/reload takes the same admin keys
        ref = env["SIMSEARCH_ADMIN_KEYS"]["secretKeyRef"]
        assert ref == {"name": name, "key": "admin-keys", "optional": True}
    assert "SIMSEARCH_API_KEYS" not in shard  # shards never check search keys


def test_a_key_file_is_mounted_from_the_secret_for_rotation() -> None:
    objects = render(None, "auth.apiKeys={s1}", "auth.adminKeys={a1}", "auth.keyFile.enabled=true")
    assert secret_data(objects)["keys"].split() == ["admin:a1", "search:s1"]
    name = find(objects, "Secret", "-api-keys")["metadata"]["name"]
    for kind, suffix in (("Deployment", "-router"), ("StatefulSet", "-shard")):
        workload = find(objects, kind, suffix)
        pod = pod_specs(workload)[0]
        env = env_of(objects, kind, suffix)
        assert env["SIMSEARCH_API_KEYS_FILE"] == "/etc/simsearch/keys/keys"
        assert "SIMSEARCH_API_KEYS" not in env and "SIMSEARCH_ADMIN_KEYS" not in env
        (mount,) = [m for m in containers(pod)[0]["volumeMounts"] if m["name"] == "api-keys"]
        assert mount == {"name": "api-keys", "mountPath": "/etc/simsearch/keys", "readOnly": True}
        assert "subPath" not in mount  # a subPath mount never sees the Secret's updates
        (volume,) = [v for v in pod["volumes"] if v["name"] == "api-keys"]
        assert volume["secret"] == {"secretName": name, "items": [{"key": "keys", "path": "keys"}]}


def test_an_existing_secret_key_file_and_its_key_name() -> None:
    objects = render(str(CHART / "ci" / "external-s3-values.yaml"))
    assert not [o for o in objects if o["metadata"]["name"].endswith("-api-keys")]
    router = find(objects, "Deployment", "-router")
    (volume,) = [v for v in pod_specs(router)[0]["volumes"] if v["name"] == "api-keys"]
    assert volume["secret"]["secretName"] == "simsearch-api-keys"


def test_rate_limits_and_trusted_proxies_follow_values() -> None:
    objects = render(
        None,
        "router.rateLimits.enabled=false",
        "router.rateLimits.images.perAddress=off",
        "router.trustedProxies={10.244.0.0/16,192.0.2.1}",
    )
    router = env_of(objects, "Deployment", "-router")
    assert router["SIMSEARCH_RATE_LIMITS"] == "false"
    assert router["SIMSEARCH_RATE_IMAGES_PER_ADDRESS"] == "off"
    assert router["SIMSEARCH_TRUSTED_PROXIES"] == "10.244.0.0/16,192.0.2.1"


def test_notes_warn_about_limits_behind_an_ingress_without_trusted_proxies() -> None:
    def notes(*sets: str) -> str:
        args = [a for item in sets for a in ("--set", item)]
        done = helm("install", "demo", str(CHART), "--dry-run=client", "-n", "search", *args)
        assert done.returncode == 0, done.stderr
        return done.stdout.split("NOTES:", 1)[1]

    assert "router.trustedProxies is empty" in notes("router.ingress.enabled=true")
    quiet = notes("router.ingress.enabled=true", "router.trustedProxies={10.0.0.0/8}")
    assert "trustedProxies is empty" not in quiet
    assert "kubectl port-forward (loopback)" in quiet  # no keys: admin only on loopback
