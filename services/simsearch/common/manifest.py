"""The manifest schema of an index version, version ids, and file checksums.

`manifest.json` is the complete, immutable description of one published version: what
embedded the vectors (`ModelInfo`), how the index was built and is searched
(`IndexParams`, `RecallProbe`), and every file it needs (`FileRef`, `PartitionInfo`).
Its models are frozen and refuse unknown fields, so a misspelt field is an error and a
loaded manifest can be shared between threads. Where the files live in the store and
how a version is published is `simsearch.common.layout`'s business; this module knows
nothing about stores.

Version ids start with a UTC timestamp (`v20261127T031500Z-1a2b3c`), so sorting them as
strings sorts them by creation time, which `IndexLayout.rollback` and `gc` rely on.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from simsearch.common.errors import CorruptIndex, InvalidParameter
from simsearch.common.metadata import FieldType

__all__ = [
    "FORMAT_VERSION",
    "CentroidFit",
    "FileRef",
    "IndexParams",
    "Manifest",
    "ModelInfo",
    "PartitionInfo",
    "RecallProbe",
    "check_relative_path",
    "check_version_id",
    "is_index_name",
    "is_version_id",
    "new_version_id",
    "sha256_file",
    "verify_file",
]

FORMAT_VERSION = 1

_CHUNK = 1024 * 1024  # sha256 reads files in 1 MiB chunks: constant memory for any size
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# "v" + UTC timestamp to the second + 6 random hex digits (two builds in the same second
# still get different folders). Fixed width, so string order is time order.
_VERSION_RE = re.compile(r"^v\d{8}T\d{6}Z-[0-9a-f]{6}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


# ----------------------------------------------------------------------- names and ids


def is_index_name(name: str) -> bool:
    """Whether `name` is a valid index name: it becomes a key segment (`index/<name>/`)."""
    return isinstance(name, str) and _NAME_RE.match(name) is not None


def is_version_id(version: str) -> bool:
    """Whether `version` has the shape `new_version_id` produces."""
    return isinstance(version, str) and _VERSION_RE.match(version) is not None


def check_version_id(version: str) -> str:
    """The version id unchanged, or `InvalidParameter`: ids become key segments."""
    if not is_version_id(version):
        raise InvalidParameter(
            f"invalid index version id {version!r}: expected v<YYYYMMDD>T<HHMMSS>Z-<6 hex>, "
            "e.g. v20261127T031500Z-1a2b3c"
        )
    return version


def check_relative_path(relative: str) -> str:
    """A "/"-separated path inside a folder: no empty, '.' or '..' segments, no '\\'."""
    if not isinstance(relative, str) or not relative:
        raise InvalidParameter(f"relative path must be a non-empty string, got {relative!r}")
    if "\\" in relative or "\x00" in relative or relative.startswith("/"):
        raise InvalidParameter(f"relative path {relative!r} must be relative with '/' separators")
    if any(part in ("", ".", "..") for part in relative.split("/")):
        raise InvalidParameter(f"relative path {relative!r} has an empty, '.' or '..' segment")
    return relative


def new_version_id(now: datetime | None = None) -> str:
    """A fresh version id, `v<UTC timestamp>-<6 random hex>`; ids sort by creation time.

    `now` must be timezone-aware (a naive datetime is ambiguous, and a wrong offset would
    break the chronological order that `gc` relies on); default: the current time.
    """
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None or now.utcoffset() is None:
        raise InvalidParameter("new_version_id needs a timezone-aware datetime, got a naive one")
    return f"v{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a local file, read in 1 MiB chunks so memory stays flat."""
    digest = hashlib.sha256()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with open(path, "rb") as f:
        while n := f.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


# ---------------------------------------------------------------------------- models


class _Frozen(BaseModel):
    """Manifest parts are immutable (shared across threads once loaded) and strict about
    field names, so a misspelt field is an error rather than a silently dropped value."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelInfo(_Frozen):
    """What embedded the vectors; a query must be embedded the same way to be comparable."""

    name: str = Field(min_length=1)
    dim: int = Field(ge=1)
    preprocessing: dict[str, Any] = Field(default_factory=dict)


class IndexParams(_Frozen):
    """How the FAISS index was built and should be searched, and why.

    `metric` is inner product on L2-normalised vectors, i.e. cosine similarity.
    `refine` is how many times `k` candidates are re-ranked exactly against the stored
    features (1 = no re-ranking). `reason` records why these values were chosen, so an
    operator reading the manifest can tell an automatic choice from a requested one.
    """

    factory: str = Field(min_length=1)  # "Flat", "IVF1024,PQ64", ...
    metric: Literal["ip"] = "ip"
    nlist: int | None = Field(default=None, ge=1)
    pq_m: int | None = Field(default=None, ge=1)
    nbits: int | None = Field(default=None, ge=1)
    nprobe: int = Field(default=1, ge=1)
    refine: int = Field(default=1, ge=1)
    train_size: int = Field(default=0, ge=0)
    reason: str = ""
    # PCA to this many dimensions before the index (the scoring space); None: raw space.
    # Recorded in the manifest; the transform itself lives in `trained.faiss`.
    pca_dim: int | None = Field(default=None, ge=1)


class RecallProbe(_Frozen):
    """Recall the indexer measured at build time on a held-out sample of indexed vectors.

    Each probe query is an indexed vector; its own id is left out of both the exact and
    the approximate top-k, so the figure is about its neighbours, not about finding
    itself. Exact search runs in the index's scoring space (`IndexParams.pca_dim`), with
    the same pipeline as the shards (coarse lists, scan, exact re-rank of k·refine).
    `curve` maps each nprobe tried to its recall; `nprobe` is the chosen default.
    """

    queries: int = Field(ge=0)
    k: int = Field(ge=1)
    nprobe: int = Field(ge=1)
    refine: int = Field(ge=1)
    recall: float = Field(ge=0, le=1)
    target: float = Field(ge=0, le=1)
    curve: dict[int, float] = Field(default_factory=dict)
    seconds: float = Field(default=0, ge=0)


class CentroidFit(_Frozen):
    """How far vectors lie from their nearest coarse centroid: the drift baseline.

    Distances are Euclidean, in the scoring space (`Template.centroid_distance`, the code
    the shard uses on live queries). `trained` is the mean over the sample the template
    was trained on, carried over unchanged by incremental builds that reuse the
    template; `indexed` and `p90` describe a sample of this version's vectors. A shard
    reports live queries' mean against `indexed` (`simsearch_drift_ratio`); the indexer
    compares new vectors against `trained` and advises `--retrain` when they drift.
    """

    trained: float = Field(ge=0)
    indexed: float = Field(ge=0)
    p90: float = Field(ge=0)
    sample: int = Field(ge=0)


class FileRef(_Frozen):
    """One file of a version: where it is, how big, and its sha256.

    `key` is relative to the index root `index/<name>/` (e.g.
    `versions/v…/partitions/0003/index.faiss`), not to the version folder, so that an
    incremental build can point at a file in an older version's folder instead of
    copying it.
    """

    key: str
    size: int = Field(ge=0)
    sha256: str

    @field_validator("key")
    @classmethod
    def _key_inside_index(cls, key: str) -> str:
        try:
            return check_relative_path(key)
        except InvalidParameter as exc:
            raise ValueError(exc.reason) from None

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, sha256: str) -> str:
        if not _SHA256_RE.match(sha256):
            raise ValueError(f"sha256 must be 64 lowercase hex digits, got {sha256!r}")
        return sha256


class PartitionInfo(_Frozen):
    """One partition: how many vectors it holds and its two files."""

    partition: int = Field(ge=0)
    count: int = Field(ge=0)
    index: FileRef  # index.faiss: the trained template with this partition's vectors added
    features: FileRef  # features.h5: features, paths, ids (contiguous, memory-mappable)
    # metadata.arrow: one row per features row (`common.metatable`); None before filters
    metadata: FileRef | None = None


class Manifest(_Frozen):
    """The complete description of one published index version (`manifest.json`).

    Validation enforces what readers rely on: `partition_files[p]` describes partition
    `p` for every `p` in `0..partitions-1`, and `total` is the sum of the counts.
    """

    format_version: int = FORMAT_VERSION
    index_name: str
    version: str
    created: datetime
    model: ModelInfo
    params: IndexParams
    partitions: int = Field(ge=1)
    total: int = Field(ge=0)
    dtype: Literal["float32", "float16"] = "float32"  # of `features` in features.h5
    trained: FileRef
    partition_files: list[PartitionInfo]
    source: str | None = None  # the images URI the index was built from
    parent: str | None = None  # the version an incremental build started from
    probe: RecallProbe | None = None  # recall measured at build time (None: not measured)
    # the metadata schema (field -> type) every partition's metadata.arrow has; None for a
    # version without metadata (built before filters): filters on it are refused
    metadata: dict[str, FieldType] | None = None
    # distances to the nearest coarse centroid at build time (None: exact plan, or built
    # before the field): the baseline of the drift gauge
    centroid_fit: CentroidFit | None = None

    @field_validator("format_version")
    @classmethod
    def _known_format(cls, value: int) -> int:
        if value != FORMAT_VERSION:
            raise ValueError(
                f"manifest format_version {value} is not supported: this simsearch reads "
                f"format {FORMAT_VERSION} (a newer simsearch wrote it? upgrade)"
            )
        return value

    @field_validator("index_name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        if not is_index_name(name):
            raise ValueError(f"invalid index name {name!r}")
        return name

    @field_validator("version", "parent")
    @classmethod
    def _valid_version(cls, version: str | None) -> str | None:
        if version is not None and not is_version_id(version):
            raise ValueError(f"invalid version id {version!r}")
        return version

    @field_validator("created")
    @classmethod
    def _utc(cls, created: datetime) -> datetime:
        if created.tzinfo is None or created.utcoffset() is None:
            raise ValueError("created must be timezone-aware (UTC)")
        return created.astimezone(UTC)

    @model_validator(mode="after")
    def _metadata_everywhere(self) -> Manifest:
        """A schema means every partition has its table, and no schema means none has."""
        with_table = [info.metadata is not None for info in self.partition_files]
        if self.metadata is not None and not all(with_table):
            raise ValueError("metadata schema given but some partitions have no metadata file")
        if self.metadata is None and any(with_table):
            raise ValueError("partitions have metadata files but the manifest has no schema")
        return self

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        numbers = [info.partition for info in self.partition_files]
        if len(numbers) != self.partitions:
            raise ValueError(
                f"partitions is {self.partitions} but partition_files has {len(numbers)} entries"
            )
        if numbers != list(range(self.partitions)):
            dupes = sorted(p for p, n in Counter(numbers).items() if n > 1)
            missing = sorted(set(range(self.partitions)) - set(numbers))
            if dupes or missing:
                raise ValueError(
                    f"partition_files must hold partitions 0..{self.partitions - 1} once each: "
                    f"duplicated {dupes}, missing {missing}"
                )
            raise ValueError("partition_files must be sorted by partition")
        counted = sum(info.count for info in self.partition_files)
        if counted != self.total:
            raise ValueError(f"total is {self.total} but the partition counts sum to {counted}")
        if self.parent is not None and self.parent >= self.version:
            raise ValueError(
                f"parent {self.parent} must be older than the version {self.version} itself"
            )
        return self

    def files(self) -> list[FileRef]:
        """Every file the version needs: the trained template, then each partition's files
        (index, features, and metadata when the version has it)."""
        refs = [self.trained]
        for info in self.partition_files:
            refs += [info.index, info.features]
            if info.metadata is not None:
                refs.append(info.metadata)
        return refs


def verify_file(path: Path, ref: FileRef) -> None:
    """Check a local copy of `ref` (size, then sha256); `CorruptIndex` if it differs.

    The size is checked first because it is free and catches truncated downloads without
    reading the file.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise CorruptIndex(f"local copy {path} of {ref.key} does not exist") from None
    if size != ref.size:
        raise CorruptIndex(
            f"local copy {path} of {ref.key} has {size} bytes, the manifest says {ref.size}"
        )
    actual = sha256_file(path)
    if actual != ref.sha256:
        raise CorruptIndex(
            f"local copy {path} of {ref.key} has sha256 {actual}, the manifest says {ref.sha256}"
        )
