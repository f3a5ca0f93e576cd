"""How each role is started: its `simsearch` arguments and its SIMSEARCH_* environment.

`simsearch up` starts its processes from these functions, and the Helm chart starts the
same commands with the same variables (`tests/unit/test_chart_roles.py` renders the chart
and compares), so what the local tests prove is what the cluster runs. The only
differences are where a role learns about the others: locally from files the `up`/`scale`
commands write (`file` topology and discovery), in Kubernetes from the API (`kubernetes`);
those pairs are listed in `CLUSTER_EQUIVALENTS`.
"""

from __future__ import annotations

from pathlib import Path

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
    "SIMSEARCH_SHARD_ORDINAL": ("SIMSEARCH_POD_NAME",),  # ordinal = pod-name suffix
    "SIMSEARCH_TOPOLOGY_FILE": ("SIMSEARCH_STATEFULSET", "SIMSEARCH_REPLICAS"),
    "SIMSEARCH_SHARDS_FILE": ("SIMSEARCH_SHARDS_SERVICE", "SIMSEARCH_SHARDS_DNS"),
}


def shard_env(
    store: str, index: str, ordinal: int, folder: Path, replication: int = 1
) -> dict[str, str]:
    """A local shard: `file` topology from `folder/topology.json`, its own cache folder.

    The drain delay (how long a shard keeps a partition it no longer owns) must outlast
    a new shard's start and load, or a scale-up leaves a gap: 10 s covers a local process
    start (~3 s) and the load of a sample-sized index with room to spare.
    """
    return {
        "SIMSEARCH_STORE": store,
        "SIMSEARCH_INDEX": index,
        "SIMSEARCH_SHARD_ORDINAL": str(ordinal),
        "SIMSEARCH_TOPOLOGY": "file",
        "SIMSEARCH_TOPOLOGY_FILE": str(folder / "topology.json"),
        "SIMSEARCH_CACHE_DIR": str(folder / "cache" / f"shard-{ordinal}"),
        "SIMSEARCH_REPLICATION": str(replication),
        "SIMSEARCH_POLL_S": "1",
        "SIMSEARCH_DRAIN_S": "10",
    }


def router_env(
    store: str, images: str, index: str, embedder_url: str, folder: Path
) -> dict[str, str]:
    """A local router: `file` discovery from `folder/shards.json`, images served from `images`.

    An empty `images` leaves the images root to the manifest's source, and an empty
    `embedder_url` means vector search only (an imported features.h5).
    """
    env = {
        "SIMSEARCH_DISCOVERY": "file",
        "SIMSEARCH_SHARDS_FILE": str(folder / "shards.json"),
        "SIMSEARCH_EMBEDDER_URL": embedder_url,
        "SIMSEARCH_STORE": store,
        "SIMSEARCH_IMAGES_ROOT": images,
        "SIMSEARCH_INDEX": index,
        "SIMSEARCH_POLL_S": "1",
    }
    return {name: value for name, value in env.items() if value}


def embedder_env(images: str) -> dict[str, str]:
    """A local embedder may read only the images being indexed (model: the default).

    `/embed/keys` fetches what callers name, so it is fenced to `SIMSEARCH_ALLOWED_ROOTS`;
    the indexer sends it URIs under `images`. An empty `images` (an imported features.h5)
    leaves it with no roots: it embeds uploads only.
    """
    return {"SIMSEARCH_ALLOWED_ROOTS": images} if images else {}


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
