"""The shard's settings (`SIMSEARCH_*`), validated when the service starts.

Identity is resolved here, once: the ordinal comes from `SIMSEARCH_SHARD_ORDINAL`, else
from the pod-name suffix of `SIMSEARCH_POD_NAME` or `HOSTNAME` (a StatefulSet pod is
named `<release>-shard-<n>`). A shard that cannot tell who it is would load the wrong
partitions, so that is a start-up error, never a guess.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from simsearch.common.apikeys import KeySettings
from simsearch.common.limits import MAX_CANDIDATES, MAX_K
from simsearch.common.manifest import is_index_name
from simsearch.common.ordinal import parse_ordinal


class ShardSettings(KeySettings):
    """Where the index is, who this shard is, how it learns the cluster size, search limits.

    Keys (`SIMSEARCH_ADMIN_KEYS`, `SIMSEARCH_API_KEYS_FILE`, from `KeySettings`) guard only
    `/admin/reload`: `/search`, `/items` and `/info` are the router's, behind the
    NetworkPolicy, and a key check there would cost every query.
    """

    port: int = Field(8002, ge=1, le=65535)
    store: str = Field(
        None,  # required: the validator below says how to set it
        validate_default=True,
        description="Root URI of the object store holding the index (s3://… or file://…).",
    )
    index: str = Field(
        "default",
        description="Index name under index/<name>/ in the store: the collection /items "
        "serves by default, polled whatever SIMSEARCH_COLLECTIONS says.",
    )
    collections: str = Field(
        "",
        description="Comma-separated collections (index names) to poll besides "
        "SIMSEARCH_INDEX; empty: every index/<name>/ with a CURRENT in the store, "
        "listed at each poll.",
    )
    pod_name: str | None = Field(None, description="Pod name; the ordinal is its -<n> suffix.")
    hostname: str | None = Field(
        None,
        validation_alias="HOSTNAME",  # not SIMSEARCH_-prefixed: the one the OS/kubelet sets
        description="The host name (a pod's is its name): the ordinal's source after the pod name.",
    )
    shard_ordinal: int | None = Field(
        None,
        ge=0,
        validate_default=True,
        description="This shard's ordinal; default: the pod name's (or HOSTNAME's) suffix.",
    )
    topology: Literal["static", "file", "kubernetes"] = Field(
        "static",
        description="How the shard count is known: a fixed number, a JSON file, or the "
        "StatefulSet's spec.replicas (watched through the Kubernetes API).",
    )
    namespace: str | None = Field(
        None, description="Namespace of the StatefulSet (kubernetes topology; downward API)."
    )
    statefulset: str | None = Field(
        None, validate_default=True, description="Name of this shard's StatefulSet (kubernetes)."
    )
    replicas: int = Field(1, ge=1, validate_default=True, description="Shard count (static).")
    topology_file: Path | None = Field(
        None, validate_default=True, description='JSON {"replicas": N} (file topology).'
    )
    replication: int = Field(1, ge=1, le=16, description="Shards holding each partition (R).")
    cache_dir: Path | None = Field(
        None, validate_default=True, description="Local folder for downloaded partition files."
    )
    poll_s: float = Field(5.0, gt=0, le=3600, description="How often CURRENT/topology are read.")
    drain_s: float = Field(
        10.0, ge=0, le=3600, description="Delay before dropping what is no longer owned."
    )
    nprobe: int | None = Field(None, ge=1, le=65536, description="Override the manifest's.")
    refine: int | None = Field(None, ge=1, le=100, description="Override the manifest's.")
    max_k: int = Field(MAX_K, ge=1, le=MAX_K)
    max_batch_queries: int = Field(256, ge=1, le=1024)
    max_candidates: int = Field(
        MAX_CANDIDATES, ge=1, description="Largest k·refine one query may ask for (bounds memory)."
    )
    filter_exact_max: int = Field(
        20_000,
        ge=0,
        le=1_000_000,
        description=(
            "A filtered search that selects at most this many rows of the requested "
            "partitions scores them all exactly; above, the IVF scan with an id selector "
            "and nprobe scaled by 1/selectivity (docs/shard.md, Filtered search)."
        ),
    )
    search_workers: int = Field(4, ge=1, le=256, description="Threads running FAISS searches.")
    faiss_threads: int = Field(
        1,
        ge=1,
        le=256,
        description=(
            "OpenMP threads per FAISS call. Concurrency comes from the search workers and the "
            "router's batches; OpenMP workers spin between calls and steal the cores."
        ),
    )
    inline_max_queries: int = Field(
        8,
        ge=0,
        le=1024,
        description=(
            "Batches of at most this many queries run on the event loop thread: for a "
            "sub-millisecond scan the hand-off to a pool thread costs more than the scan."
        ),
    )
    exact_workers: int = Field(
        1,
        ge=1,
        le=64,
        description=(
            "Threads running the recall monitor's exact scans (brute force over every row "
            "of the partitions asked for), apart from the search workers."
        ),
    )
    exact_nice: int = Field(
        10,
        ge=0,
        le=19,
        description=(
            "Nice value of the exact-scan threads (per thread on Linux), so that foreground "
            "searches keep their latency; refused by the system: logged, the scan runs anyway."
        ),
    )
    exact_block_rows: int = Field(
        32768,
        ge=256,
        le=1 << 22,
        description=(
            "Rows an exact scan scores at a time (float32 copy of rows × dim, one matrix "
            "product): bounds its memory and the work between two releases of the GIL."
        ),
    )
    drift_window_s: float = Field(
        300.0,
        gt=0,
        le=86400,
        description=(
            "Window of the drift signal: live queries' mean distance to their nearest "
            "coarse centroid over this many seconds, against the manifest's centroid_fit."
        ),
    )
    max_request_bytes: int = Field(16 * 1024 * 1024, ge=1024)

    @field_validator("store", mode="before")
    @classmethod
    def _store_given(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ValueError(
                "required: the object store holding the index, e.g. s3://bucket/prefix or "
                "file:///data/simsearch"
            )
        return value

    @field_validator("collections")
    @classmethod
    def _collection_names(cls, value: str) -> str:
        bad = [name for name in _split(value) if not is_index_name(name)]
        if bad:
            raise ValueError(
                f"{bad[0]!r} is not an index name: use 1-63 characters of a-z, 0-9, '-' "
                "and '_', starting with a letter or digit"
            )
        return value

    @field_validator("shard_ordinal")
    @classmethod
    def _resolve_ordinal(cls, value: int | None, info: ValidationInfo) -> int:
        if value is not None:
            return value
        pod_name, hostname = info.data.get("pod_name"), info.data.get("hostname")
        for source in (pod_name, hostname):
            ordinal = parse_ordinal(source) if source else None
            if ordinal is not None:
                return ordinal
        raise ValueError(
            "cannot tell this shard's ordinal: set SIMSEARCH_SHARD_ORDINAL, or run it as a pod "
            f"named <release>-shard-<n> (SIMSEARCH_POD_NAME / HOSTNAME is "
            f"{pod_name or hostname!r})"
        )

    @field_validator("replicas")
    @classmethod
    def _ordinal_in_range(cls, value: int, info: ValidationInfo) -> int:
        ordinal = info.data.get("shard_ordinal")
        if info.data.get("topology") == "static" and ordinal is not None and ordinal >= value:
            raise ValueError(
                f"shard ordinal {ordinal} (SIMSEARCH_SHARD_ORDINAL) needs at least "
                f"{ordinal + 1} replicas with the static topology"
            )
        return value

    @field_validator("statefulset")
    @classmethod
    def _name_for_kubernetes(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("topology") == "kubernetes" and not value:
            raise ValueError(
                "required with SIMSEARCH_TOPOLOGY=kubernetes: the StatefulSet whose "
                "spec.replicas is the shard count"
            )
        return value

    @field_validator("topology_file")
    @classmethod
    def _file_for_file_topology(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if info.data.get("topology") == "file" and value is None:
            raise ValueError('required with SIMSEARCH_TOPOLOGY=file: a JSON {"replicas": N}')
        return value

    @field_validator("cache_dir")
    @classmethod
    def _default_cache(cls, value: Path | None, info: ValidationInfo) -> Path:
        if value is not None:
            return value
        ordinal = info.data.get("shard_ordinal")
        return Path(tempfile.gettempdir()) / f"simsearch-shard-{ordinal}"

    @property
    def ordinal(self) -> int:
        """The resolved ordinal (validation guarantees one, or the settings do not build)."""
        if self.shard_ordinal is None:  # pragma: no cover - excluded by the validator
            raise RuntimeError("shard ordinal was not resolved")
        return self.shard_ordinal

    @property
    def collection_names(self) -> tuple[str, ...]:
        """The collections `SIMSEARCH_COLLECTIONS` names, in order, duplicates dropped;
        empty: discover them in the store."""
        return tuple(dict.fromkeys(_split(self.collections)))

    @property
    def cache_path(self) -> Path:
        """The resolved cache folder."""
        if self.cache_dir is None:  # pragma: no cover - excluded by the validator
            raise RuntimeError("cache_dir was not resolved")
        return self.cache_dir


def _split(text: str) -> list[str]:
    """Comma-separated items, stripped, empty ones dropped."""
    return [item.strip() for item in text.split(",") if item.strip()]
