"""The index as files in an object store: where each file lives, `CURRENT`, and the
protocol that publishes, rolls back and garbage-collects versions (`IndexLayout`).

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

What a manifest holds (and the version ids and checksums) is `simsearch.common.manifest`;
this module is only about the store: keys, reading, and the steps that change what is live.

Do not run `gc` while a build of the same index is running: a build that reuses files of
a version that `gc` is deleting fails at `publish` (the missing files are detected and
nothing is published), but only the operator can avoid that wasted build.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pydantic import ValidationError

from simsearch.common.errors import (
    CorruptIndex,
    InvalidParameter,
    NotFound,
    ObjectNotFound,
)
from simsearch.common.manifest import (
    FileRef,
    Manifest,
    check_relative_path,
    check_version_id,
    is_index_name,
    is_version_id,
    sha256_file,
)
from simsearch.common.storage import ObjectStore

__all__ = [
    "CURRENT_FILE",
    "FEATURES_FILE",
    "INDEX_FILE",
    "MANIFEST_FILE",
    "TRAINED_FILE",
    "IndexLayout",
    "discover_collections",
]

MANIFEST_FILE = "manifest.json"
TRAINED_FILE = "trained.faiss"
INDEX_FILE = "index.faiss"
FEATURES_FILE = "features.h5"
CURRENT_FILE = "CURRENT"

_MAX_LISTED = 5  # how many offending keys an error message names before "and N more"


class IndexLayout:
    """Reads and writes one named index in an object store, following the rules above.

    Keys returned by the `*_key` methods are relative to the store root (they include
    `index/<name>/`), ready for `ObjectStore.get/put`; keys inside a manifest (`FileRef`)
    are relative to the index root and become store keys through `resolve`.
    """

    def __init__(self, store: ObjectStore, name: str = "default") -> None:
        """Bind to index `name` in `store`; the name becomes a key segment, so it is checked."""
        if not is_index_name(name):
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
        return f"{self.root}versions/{check_version_id(version)}/"

    @staticmethod
    def partition_relative(p: int, filename: str) -> str:
        """`partitions/<p:04d>/<filename>`: a partition file's path inside a version folder."""
        if isinstance(p, bool) or not isinstance(p, int) or p < 0:
            raise InvalidParameter(f"partition must be a non-negative integer, got {p!r}")
        if "/" in filename:
            raise InvalidParameter(f"partition file name {filename!r} must not contain '/'")
        return f"partitions/{p:04d}/{check_relative_path(filename)}"

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
        ref_key = f"versions/{check_version_id(version)}/{check_relative_path(relative)}"
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
        manifest = self.load_manifest(check_version_id(version))
        self._check_files(manifest, "roll back to")
        self._point_current_at(manifest.version)
        return manifest.version

    def _point_current_at(self, version: str) -> None:
        """Write `CURRENT`, the only step readers see; one atomic write (rename or PUT).

        Shared by `publish` and `rollback` so the pointer has one format and one writer.
        """
        self.store.put(self.current_key(), f"{check_version_id(version)}\n".encode())

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


def discover_collections(store: ObjectStore) -> list[str]:
    """The names of every index (collection) in `store` that has a `CURRENT`, sorted.

    One listing of `index/`: a collection exists for readers once its first version is
    published, and a folder whose name is not an index name is not ours and is skipped.
    """
    names: set[str] = set()
    for info in store.list("index/"):
        parts = info.key.split("/")
        if len(parts) == 3 and parts[2] == CURRENT_FILE and is_index_name(parts[1]):
            names.add(parts[1])
    return sorted(names)


def _summary(exc: ValidationError) -> str:
    """A one-line account of a pydantic error: each failing field and why."""
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "manifest"
        parts.append(f"{where}: {err['msg']}")
    return _name_some(parts)


def _name_some(items: list[str]) -> str:
    """The first few items, comma-separated, and how many more there are."""
    shown = ", ".join(items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return f"{shown} and {more} more" if more > 0 else shown
