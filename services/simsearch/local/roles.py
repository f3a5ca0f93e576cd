"""How each role is started: its `simsearch` arguments and its SIMSEARCH_* environment.

`simsearch up` starts its processes from these functions, and the Helm chart starts the
same commands with the same variables (`tests/unit/deploy/test_chart_roles.py` renders the chart
and compares), so what the local tests prove is what the cluster runs. The only
differences are where a role learns about the others: locally from files the `up`/`scale`
commands write (`file` topology and discovery), in Kubernetes from the API (`kubernetes`);
those pairs are listed in `CLUSTER_EQUIVALENTS`.

The environments are written as setting names (`_env(shard_ordinal=…)`), the fields of
each role's settings class, turned into variables by `common.settings.env_name`: local
mode may not import the roles' classes (services never import each other), so
`tests/unit/local/test_roles.py` checks every name against the class and builds the
class from the environment, as the role does at start.
"""

from __future__ import annotations

from pathlib import Path

from simsearch.common.settings import env_name

__all__ = [
    "CLUSTER_EQUIVALENTS",
    "SERVE_ARGS",
    "embedder_env",
    "indexer_args",
    "router_env",
    "shard_env",
]

SERVE_ARGS: dict[str, list[str]] = {
    role: ["serve", role] for role in ("router", "shard", "embedder")
}

# local variable -> the variable(s) the chart sets instead, with the same meaning
CLUSTER_EQUIVALENTS: dict[str, tuple[str, ...]] = {
    env_name("shard_ordinal"): (env_name("pod_name"),),  # ordinal = pod-name suffix
    env_name("topology_file"): (env_name("statefulset"), env_name("replicas")),
    env_name("shards_file"): (env_name("shards_service"), env_name("shards_dns")),
}


def _env(**settings: object) -> dict[str, str]:
    """`SIMSEARCH_*` variables from setting names and values (every value as text)."""
    return {env_name(name): str(value) for name, value in settings.items()}


def shard_env(
    store: str, index: str, ordinal: int, folder: Path, replication: int = 1
) -> dict[str, str]:
    """A local shard: `file` topology from `folder/topology.json`, its own cache folder.

    The drain delay (how long a shard keeps a partition it no longer owns) must outlast
    a new shard's start and load, or a scale-up leaves a gap: 10 s covers a local process
    start (~3 s) and the load of a sample-sized index with room to spare.
    """
    return _env(
        store=store,
        index=index,
        shard_ordinal=ordinal,
        topology="file",
        topology_file=folder / "topology.json",
        cache_dir=folder / "cache" / f"shard-{ordinal}",
        replication=replication,
        poll_s=1,
        drain_s=10,
    )


def router_env(
    store: str, images: str, index: str, embedder_url: str, folder: Path
) -> dict[str, str]:
    """A local router: `file` discovery from `folder/shards.json`, images served from `images`.

    An empty `images` leaves the images root to the manifest's source, and an empty
    `embedder_url` means vector search only (an imported features.h5).
    """
    env = _env(
        discovery="file",
        shards_file=folder / "shards.json",
        embedder_url=embedder_url,
        store=store,
        images_root=images,
        index=index,
        poll_s=1,
    )
    return {name: value for name, value in env.items() if value}


def embedder_env(*roots: str) -> dict[str, str]:
    """A local embedder may read only the images being indexed (model: the default).

    `/embed/keys` fetches what callers name, so it is fenced to `SIMSEARCH_ALLOWED_ROOTS`;
    the indexer sends it URIs under the images roots, one per collection. Without it the
    embedder would have no root at all (local mode sets no `SIMSEARCH_STORE` for it) and
    refuse every key, so `up` could not build. No root (an imported features.h5) starts
    no embedder; the `{}` then only keeps the function total.
    """
    given = [root for root in roots if root]
    return _env(allowed_roots=",".join(given)) if given else {}


def indexer_args(
    images: str, store: str, index: str, embedder_url: str, partitions: int, workdir: Path
) -> list[str]:
    """`simsearch index build` through the embedder service, resumable from `workdir`."""
    return [
        "index",
        "build",
        "--images",
        images,
        "--store",
        store,
        "--index",
        index,
        "--embedder",
        embedder_url,
        "--partitions",
        str(partitions),
        "--workdir",
        str(workdir),
    ]
