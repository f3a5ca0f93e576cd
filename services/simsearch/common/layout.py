"""The index as files in an object store: manifest schema, versions, `CURRENT`, checksums.

Everything of one index lives under `index/<name>/` in the store::

    index/<name>/versions/<version>/manifest.json
    index/<name>/versions/<version>/trained.faiss
    index/<name>/versions/<version>/partitions/<p:04d>/index.faiss
    index/<name>/versions/<version>/partitions/<p:04d>/features.h5
    index/<name>/CURRENT          # text: the live version id; written last

Rules that make this safe without locks or transactions:

* A build writes only into its own, new version folder, so nothing it does is visible
  until it publishes. `publish` first checks that every referenced file is there with the
  recorded size, then writes `manifest.json`, then `CURRENT`. Each write is atomic on its
  own (a rename on a directory store, one PUT on S3), so readers see the old version or
  the new one, never a half-built one: the flip of `CURRENT` is the only visible step.
* A version folder *with* a manifest is published; one *without* is a crashed or still
  running build and is invisible to readers (`versions()` does not list it).
* A manifest references files by keys relative to `index/<name>/`, so a file may live in
  an older version's folder: an incremental build reuses unchanged partitions without
  copying them. `gc` therefore deletes object by object, never a whole folder, and never
  a file that a kept manifest references.
* Rolling back is the same single step: `rollback` points `CURRENT` at an older
  published version (its files are still there — `gc` keeps every file a kept manifest
  references and never deletes the live version).
* Version ids start with a UTC timestamp (`v20261127T031500Z-1a2b3c`), so sorting them
  as strings sorts them by creation time.

Do not run `gc` while a build of the same index is running: a build that reuses files of
a version that `gc` is deleting fails at `publish` (the missing files are detected and
nothing is published), but only the operator can avoid that wasted build.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from simsearch.common.errors import (
    CorruptIndex,
    InvalidParameter,
    NotFound,
    ObjectNotFound,
)
from simsearch.common.storage import ObjectStore

__all__ = [
    "CURRENT_FILE",
    "FEATURES_FILE",
    "FORMAT_VERSION",
    "INDEX_FILE",
    "MANIFEST_FILE",
    "TRAINED_FILE",
    "CorruptIndex",
    "FileRef",
    "IndexLayout",
    "IndexParams",
    "Manifest",
    "ModelInfo",
    "PartitionInfo",
    "RecallProbe",
    "is_version_id",
    "new_version_id",
    "sha256_file",
    "verify_file",
]

FORMAT_VERSION = 1

MANIFEST_FILE = "manifest.json"
TRAINED_FILE = "trained.faiss"
INDEX_FILE = "index.faiss"
FEATURES_FILE = "features.h5"
CURRENT_FILE = "CURRENT"

_CHUNK = 1024 * 1024  # sha256 reads files in 1 MiB chunks: constant memory for any size
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# "v" + UTC timestamp to the second + 6 random hex digits (two builds in the same second
# still get different folders). Fixed width, so string order is time order.
_VERSION_RE = re.compile(r"^v\d{8}T\d{6}Z-[0-9a-f]{6}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_MAX_LISTED = 5  # how many offending keys an error message names before "and N more"


# --------------------------------------------------------------------------- helpers


def is_version_id(version: str) -> bool:
    """Whether `version` has the shape `new_version_id` produces."""
    return isinstance(version, str) and _VERSION_RE.match(version) is not None


def _check_version(version: str) -> str:
    """The version id unchanged, or `InvalidParameter`: ids become key segments."""
    if not is_version_id(version):
        raise InvalidParameter(
            f"invalid index version id {version!r}: expected v<YYYYMMDD>T<HHMMSS>Z-<6 hex>, "
            "e.g. v20261127T031500Z-1a2b3c"
        )
    return version


def _check_relative(relative: str) -> str:
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


def _name_some(items: list[str]) -> str:
    """The first few items, comma-separated, and how many more there are."""
    shown = ", ".join(items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return f"{shown} and {more} more" if more > 0 else shown


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
            return _check_relative(key)
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
        if not _NAME_RE.match(name):
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
        """Every file the version needs: the trained template, then each partition's two."""
        refs = [self.trained]
        for info in self.partition_files:
            refs += [info.index, info.features]
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


# ---------------------------------------------------------------------------- layout


class IndexLayout:
    """Reads and writes one named index in an object store, following the rules above.

    Keys returned by the `*_key` methods are relative to the store root (they include
    `index/<name>/`), ready for `ObjectStore.get/put`; keys inside a manifest (`FileRef`)
    are relative to the index root and become store keys through `resolve`.
    """

    def __init__(self, store: ObjectStore, name: str = "default") -> None:
        """Bind to index `name` in `store`; the name becomes a key segment, so it is checked."""
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise InvalidParameter(
                f"invalid index name {name!r}: use 1-63 characters of a-z, 0-9, '-' and '_', "
                "starting with a letter or digit"
            )
        self.store = store
        self.name = name
        self.root = f"index/{name}/"

    def __repr__(self) -> str:
        return f"IndexLayout({self.store!r}, {self.name!r})"

    # ---- keys

    def version_prefix(self, version: str) -> str:
        """`index/<name>/versions/<version>/`, with the trailing "/" so that listing it
        never matches another version whose id merely starts the same way."""
        return f"{self.root}versions/{_check_version(version)}/"

    @staticmethod
    def partition_relative(p: int, filename: str) -> str:
        """`partitions/<p:04d>/<filename>`: a partition file's path inside a version folder."""
        if isinstance(p, bool) or not isinstance(p, int) or p < 0:
            raise InvalidParameter(f"partition must be a non-negative integer, got {p!r}")
        if "/" in filename:
            raise InvalidParameter(f"partition file name {filename!r} must not contain '/'")
        return f"partitions/{p:04d}/{_check_relative(filename)}"

    def partition_key(self, version: str, p: int, filename: str) -> str:
        """Store key of a partition file (`INDEX_FILE` or `FEATURES_FILE`) in `version`."""
        return self.version_prefix(version) + self.partition_relative(p, filename)

    def trained_key(self, version: str) -> str:
        """Store key of the version's trained template (`trained.faiss`)."""
        return self.version_prefix(version) + TRAINED_FILE

    def manifest_key(self, version: str) -> str:
        """Store key of the version's `manifest.json`; its existence means "published"."""
        return self.version_prefix(version) + MANIFEST_FILE

    def current_key(self) -> str:
        """Store key of `CURRENT`, the pointer to the live version."""
        return self.root + CURRENT_FILE

    def resolve(self, ref: FileRef) -> str:
        """The store key of a manifest's file reference."""
        return self.root + ref.key

    # ---- writing

    def upload(self, version: str, relative: str, path: Path) -> FileRef:
        """Upload the local file `path` to `<version folder>/<relative>`; return its FileRef.

        Size and sha256 are computed from the local file before the upload, so the
        manifest records what the builder meant to write; `publish` and the shards'
        `verify_file` then catch anything the store did not keep intact.
        """
        ref_key = f"versions/{_check_version(version)}/{_check_relative(relative)}"
        size = path.stat().st_size
        digest = sha256_file(path)
        self.store.upload_file(self.root + ref_key, path)
        return FileRef(key=ref_key, size=size, sha256=digest)

    def publish(self, manifest: Manifest) -> None:
        """Make `manifest`'s version the live one: check files, write manifest, flip CURRENT.

        Refuses (`CorruptIndex`, nothing written) when a referenced file is missing or has
        another size than recorded, and (`InvalidParameter`) when the manifest belongs to
        another index or its version was already published with different content.
        Publishing the same manifest again only re-writes `CURRENT`, so a publish that
        crashed between the two writes can simply be retried; publishing an older
        version's unchanged manifest is a rollback.
        """
        if manifest.index_name != self.name:
            raise InvalidParameter(
                f"manifest of index {manifest.index_name!r} cannot be published as {self.name!r}"
            )
        self._check_files(manifest, "publish")
        key = self.manifest_key(manifest.version)
        try:
            existing: Manifest | None = self.load_manifest(manifest.version)
        except NotFound:
            existing = None
        if existing is None:
            self.store.put(key, manifest.model_dump_json(indent=2).encode() + b"\n")
        elif existing != manifest:
            raise InvalidParameter(
                f"version {manifest.version} of index {self.name!r} is already published with "
                "a different manifest; a published version never changes — build a new one"
            )
        self._point_current_at(manifest.version)

    def rollback(self, version: str | None = None) -> str:
        """Point `CURRENT` back at an older published version; return the version now live.

        Without `version`: the newest published version older than the live one (ids sort
        by creation time, so "older" is string order). With `version`: that version, which
        must be published (newer than the live one is allowed, to undo a rollback; the
        live one itself is a harmless no-op). Nothing is rebuilt or copied: a published
        version never changes, so flipping the pointer is the whole rollback, and shards
        follow it on their next poll. The files are checked as `publish` checks them, so a
        version damaged by hand is refused rather than handed to shards that cannot load it.

        `NotFound` when nothing is live or nothing older is published, or `version` is not
        published; `CorruptIndex` when its manifest or files are damaged; `InvalidParameter`
        when `version` is not a version id.
        """
        live = self.current()
        if live is None:
            raise NotFound(
                f"index {self.name!r} has no live version in {self.store.uri} "
                f"(no {self.current_key()}): nothing to roll back"
            )
        if version is None:
            older = [v for v in self.versions() if v < live]
            if not older:
                raise NotFound(
                    f"index {self.name!r} has no published version older than the live "
                    f"{live} to roll back to"
                )
            version = older[-1]
        manifest = self.load_manifest(_check_version(version))
        self._check_files(manifest, "roll back to")
        self._point_current_at(manifest.version)
        return manifest.version

    def _point_current_at(self, version: str) -> None:
        """Write `CURRENT`, the only step readers see; one atomic write (rename or PUT).

        Shared by `publish` and `rollback` so the pointer has one format and one writer.
        """
        self.store.put(self.current_key(), f"{_check_version(version)}\n".encode())

    def _check_files(self, manifest: Manifest, action: str) -> None:
        """Every referenced file exists with the recorded size (one listing per folder);
        `action` ("publish", "roll back to") names what is refused otherwise."""
        refs = manifest.files()
        sizes: dict[str, int] = {}
        folders = {self._folder_prefix(ref) for ref in refs}
        for folder in sorted(f for f in folders if f is not None):
            sizes.update((info.key, info.size) for info in self.store.list(folder))
        problems: list[str] = []
        for ref in refs:
            key = self.resolve(ref)
            size = sizes.get(key)
            if size is None and self._folder_prefix(ref) is None:
                try:  # outside any version folder: not covered by the listings
                    size = self.store.size(key)
                except ObjectNotFound:
                    size = None
            if size is None:
                problems.append(f"{key} is missing")
            elif size != ref.size:
                problems.append(f"{key} has {size} bytes, not {ref.size}")
        if problems:
            raise CorruptIndex(
                f"refusing to {action} version {manifest.version} of index {self.name!r}: "
                f"{_name_some(problems)}"
            )

    def _folder_prefix(self, ref: FileRef) -> str | None:
        """The store prefix of the version folder `ref` lies in, if it lies in one."""
        parts = ref.key.split("/")
        if len(parts) >= 3 and parts[0] == "versions" and is_version_id(parts[1]):
            return self.version_prefix(parts[1])
        return None

    # ---- reading

    def current(self) -> str | None:
        """The live version id, or None when nothing was ever published."""
        try:
            text = self.store.get(self.current_key())
        except ObjectNotFound:
            return None
        version = text.decode("utf-8", errors="replace").strip()
        if not is_version_id(version):
            raise CorruptIndex(
                f"{self.store.url_for(self.current_key())} holds {version[:80]!r}, not a version id"
            )
        return version

    def load_manifest(self, version: str | None = None) -> Manifest:
        """The manifest of `version`, by default of the live version.

        `NotFound` when the index has no live version or `version` is not published (never
        built, crashed mid-build, still building, or garbage-collected); `CorruptIndex`
        when the manifest cannot be parsed or does not describe what its path says.
        """
        if version is None:
            version = self.current()
            if version is None:
                raise NotFound(
                    f"index {self.name!r} has no published version in {self.store.uri} "
                    f"(no {self.current_key()}); build one with `simsearch index build`"
                )
        key = self.manifest_key(version)
        try:
            raw = self.store.get(key)
        except ObjectNotFound:
            raise NotFound(
                f"version {version} of index {self.name!r} is not published in "
                f"{self.store.uri}: no {key} (never built, crashed or unfinished build, or "
                "garbage-collected)"
            ) from None
        try:
            manifest = Manifest.model_validate_json(raw)
        except ValidationError as exc:
            raise CorruptIndex(
                f"{self.store.url_for(key)} is not a valid manifest: {_summary(exc)}"
            ) from exc
        if manifest.version != version or manifest.index_name != self.name:
            raise CorruptIndex(
                f"{self.store.url_for(key)} describes version {manifest.version} of index "
                f"{manifest.index_name!r}, not {version} of {self.name!r}"
            )
        return manifest

    def versions(self) -> list[str]:
        """Published versions (folders holding a manifest.json), oldest first."""
        return sorted(v for v, keys in self._folders().items() if MANIFEST_FILE in keys)

    def _folders(self) -> dict[str, list[str]]:
        """Every version folder in the store: version id -> its files (relative to it).

        Folders whose name is not a version id are not ours and are ignored entirely.
        """
        prefix = f"{self.root}versions/"
        folders: dict[str, list[str]] = {}
        for info in self.store.list(prefix):
            version, slash, rest = info.key[len(prefix) :].partition("/")
            if slash and rest and is_version_id(version):
                folders.setdefault(version, []).append(rest)
        return folders

    # ---- garbage collection

    def gc(self, keep: int) -> list[str]:
        """Delete old versions; return the ids of those it deleted anything of, oldest first.

        Kept: the newest `keep` published versions and the live one (CURRENT may point at
        an older version after a rollback). Deleted: the other published versions, and
        abandoned folders (no manifest) older than the newest published version — those
        are crashed builds; newer ones may be builds still running and are left alone.

        Deletion is object by object and spares every file a kept manifest references,
        since an incremental build's manifest may point into an older folder. A deleted
        version loses its manifest first, so a crash midway leaves an unpublished folder
        (cleaned by the next gc), never a published manifest with missing files. If a kept
        manifest cannot be read, nothing is deleted: what it references is unknown.
        """
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise InvalidParameter(
                f"gc keep must be at least 1 (the live version is never deleted), got {keep!r}"
            )
        folders = self._folders()
        published = sorted(v for v, files in folders.items() if MANIFEST_FILE in files)
        kept = set(published[-keep:])
        live = self.current()
        if live is not None:
            kept.add(live)
        referenced: set[str] = set()
        for version in sorted(kept):
            try:
                manifest = self.load_manifest(version)
            except (NotFound, CorruptIndex) as exc:
                raise CorruptIndex(
                    f"gc of index {self.name!r} deleted nothing: the kept version {version} "
                    f"cannot be read, so what it references is unknown ({exc.reason})"
                ) from exc
            referenced.add(self.manifest_key(version))
            referenced.update(self.resolve(ref) for ref in manifest.files())
        newest = published[-1] if published else None
        doomed = [
            v
            for v in sorted(folders)
            if v not in kept and (v in published or (newest is not None and v < newest))
        ]
        deleted: list[str] = []
        for version in doomed:
            prefix = self.version_prefix(version)
            files = sorted(folders[version], key=lambda rel: rel != MANIFEST_FILE)
            removed = self._delete_unreferenced((prefix + rel for rel in files), referenced)
            if removed:
                deleted.append(version)
        return deleted

    def _delete_unreferenced(self, keys: Iterable[str], referenced: set[str]) -> int:
        """Delete each key not in `referenced`, in the given order; how many were deleted."""
        count = 0
        for key in keys:
            if key not in referenced:
                self.store.delete(key)
                count += 1
        return count


def _summary(exc: ValidationError) -> str:
    """A one-line account of a pydantic error: each failing field and why."""
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "manifest"
        parts.append(f"{where}: {err['msg']}")
    return _name_some(parts)
