"""Partition files from the object store to a searchable, memory-mapped partition.

`PartitionCache` keeps a local copy of every file the shard serves, at
`<cache_dir>/<index>/<FileRef.key>` — the same relative key the manifest uses, so a file
that an incremental build references from an older version is downloaded once and shared
by both versions. Nothing is served that has not been verified (size, then sha256)
against the manifest: a download that does not verify is deleted and refused, a cached
file that does not verify is deleted and downloaded again. Downloads are atomic
(`ObjectStore.download_file`), so a crash never leaves a half file that could pass for a
cached one.

Hashing every cached file again on each start would make a restart as slow as reading the
whole cache (~10 s for 2.5 GB at 1M vectors), so a full verification leaves a *stamp* at
`<cache_dir>/.stamps/<index>/<FileRef.key>`: the key, sha256 and size it was checked
against and the file's stat (size, mtime, ctime, inode). A later fetch trusts a cached
file without reading it only when the manifest still asks for that sha256 and size and
the stat is still exactly the stamped one; anything else (no stamp, an unreadable one, a
different sha256, a file truncated, rewritten or replaced since) means the full check
again. ctime cannot be set back by ordinary tools (`touch`/`utime` set it to now) and a replaced
file gets a new inode, so restoring an old mtime does not fool the stamp; a stamp is only
written once the file's timestamps are older than the stamp itself, so a write in the
same coarse clock tick as the check cannot hide behind unchanged timestamps. What a stamp
does not catch is a change below the filesystem that leaves the stat alone: bit rot of
the disk, or a raw write to the block device. Those are only found by hashing again;
deleting `<cache_dir>/.stamps/` forces that on the next start. The device number is not
stamped: it may change when the volume is mounted again, and the path already pins the
file.

`load_partition` then memory-maps the partition (`searcher.load_partition`: the index, the
features and, for a version with metadata, its `metadata.arrow` table, which filters are
evaluated on) and reads its `paths` into memory: every search answer carries the path of
each candidate, and a partition's paths are a few MB at most (~80 bytes × its vectors), so
holding them beats opening the HDF5 file for every request (h5py serialises all access
behind one lock).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from simsearch.common.errors import CorruptIndex
from simsearch.common.layout import IndexLayout
from simsearch.common.manifest import FileRef, Manifest, PartitionInfo, verify_file
from simsearch.shard.metrics import ShardMetrics
from simsearch.shard.searcher import Partition, VersionIndex, load_partition, load_template

__all__ = ["PartitionCache", "Served", "partition_refs", "read_paths"]

log = logging.getLogger(__name__)

STAMPS_DIR = ".stamps"  # under cache_dir, beside the index folders (names never start with ".")
_STAMP_FORMAT = 1  # part of every stamp: a new layout makes old stamps mismatch, not mislead


@dataclass(frozen=True)
class Served:
    """A partition ready to search: its FAISS index, its exact vectors, its metadata table
    (in `partition`) and its paths."""

    info: PartitionInfo
    partition: Partition
    paths: PackedPaths  # row-aligned with partition.features

    @property
    def number(self) -> int:
        return self.info.partition

    def refs(self) -> tuple[FileRef, ...]:
        """Every file the partition is served from (index, features, metadata if any)."""
        return partition_refs(self.info)


def partition_refs(info: PartitionInfo) -> tuple[FileRef, ...]:
    """The files of one partition: index, features, and the metadata table when it has one."""
    if info.metadata is None:
        return info.index, info.features
    return info.index, info.features, info.metadata


class PackedPaths:
    """A partition's stored paths as one UTF-8 blob and offsets: ~8 B + the path per row.

    Every answer carries a path per candidate and h5py serialises all file access behind
    one lock, so paths live in memory; as Python `str` objects they cost ~80 B each for
    a 22-character key (≈ 40 MB per 500k vectors), packed about a third of that.
    """

    def __init__(self, paths: list[bytes]) -> None:
        lengths = np.fromiter((len(p) for p in paths), dtype=np.int64, count=len(paths))
        self._offsets = np.concatenate([np.zeros(1, np.int64), np.cumsum(lengths)])
        self._blob = b"".join(paths)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, row: int) -> str:
        start, end = self._offsets[row], self._offsets[row + 1]
        return self._blob[start:end].decode("utf-8")

    @property
    def nbytes(self) -> int:
        """RAM the packed paths hold: the blob and the offsets (what `/info` reports)."""
        return len(self._blob) + int(self._offsets.nbytes)

    def take(self, rows: np.ndarray) -> list[str]:
        """The paths of several rows, in order."""
        return [self[int(r)] for r in rows]


def read_paths(path: Path) -> PackedPaths:
    """The `paths` dataset of a features.h5, packed."""
    with h5py.File(path, "r") as h5:
        raw = h5["paths"][:]
    return PackedPaths([p if isinstance(p, bytes) else str(p).encode() for p in raw])


def _identity(st: os.stat_result) -> list[int]:
    """What changes when a file is written, truncated or replaced: size, mtime, ctime, inode.

    Not atime (reading changes it), not the device number (a remount can change it).
    """
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _stamp(ref: FileRef, st: os.stat_result) -> dict[str, object]:
    """What a stamp says: `ref` verified against the file that `st` describes (as JSON)."""
    return {
        "format": _STAMP_FORMAT,
        "key": ref.key,
        "sha256": ref.sha256,
        "size": ref.size,
        "stat": _identity(st),
    }


class PartitionCache:
    """Verified local copies of index files, and loading partitions from them."""

    def __init__(self, layout: IndexLayout, cache_dir: Path, metrics: ShardMetrics) -> None:
        self.layout = layout
        self.root = cache_dir / layout.name
        self.stamps = cache_dir / STAMPS_DIR / layout.name  # beside root, not in it
        self.metrics = metrics

    def path_of(self, ref: FileRef) -> Path:
        """Where the local copy of `ref` lives (FileRef keys are checked relative paths)."""
        return self.root.joinpath(*ref.key.split("/"))

    def stamp_of(self, ref: FileRef) -> Path:
        """Where the verification stamp of `ref`'s local copy lives (same relative key)."""
        return self.stamps.joinpath(*ref.key.split("/"))

    def fetch(self, ref: FileRef) -> Path:
        """A verified local copy of `ref`: the cached one if stamped or it verifies, else a
        download.

        Raises `CorruptIndex` when the downloaded bytes do not match the manifest (the bad
        copy is deleted, so the next attempt downloads again) and `StorageError` /
        `ObjectNotFound` when the store fails.
        """
        local = self.path_of(ref)
        if local.is_file():
            if self._stamped(local, ref):
                self.metrics.cache_hits.inc()
                return local
            try:
                self._verify(local, ref)
            except CorruptIndex as err:
                log.warning("cached file failed verification, downloading again: %s", err.reason)
                local.unlink(missing_ok=True)
            else:
                self.metrics.cache_hits.inc()
                return local
        self.layout.store.download_file(self.layout.resolve(ref), local)
        self.metrics.downloaded_bytes.inc(local.stat().st_size)
        try:
            self._verify(local, ref)
        except CorruptIndex as err:
            local.unlink(missing_ok=True)
            raise CorruptIndex(
                f"{self.layout.store.url_for(self.layout.resolve(ref))} does not match the "
                f"manifest: {err.reason}"
            ) from err
        return local

    def _stamped(self, local: Path, ref: FileRef) -> bool:
        """Whether a stamp vouches for `local` as it is now, against `ref` as it is now.

        An unreadable or corrupt stamp is no stamp: the file is simply hashed again.
        """
        try:
            stamp = json.loads(self.stamp_of(ref).read_bytes())
            return bool(stamp == _stamp(ref, local.stat()))
        except (OSError, ValueError):
            return False

    def _verify(self, local: Path, ref: FileRef) -> None:
        """`verify_file` in full, then stamp the file so the next start can skip the hash.

        The old stamp goes first: whatever it vouched for is being checked again, and a
        file that fails (or cannot be stamped safely) must be left without one.
        """
        stamp = self.stamp_of(ref)
        stamp.unlink(missing_ok=True)
        before = local.stat()
        verify_file(local, ref)
        self._write_stamp(stamp, local, ref, before)

    def _write_stamp(self, stamp: Path, local: Path, ref: FileRef, before: os.stat_result) -> None:
        """Record that `local`, as `before` describes it, matched `ref` — when that is safe.

        Written to a temp file and renamed, so a reader sees a whole stamp or none. Not
        written when the file changed while it was hashed, nor when the file's mtime or
        ctime is not older than the stamp: timestamps advance in coarse ticks (a few ms),
        so a write in the tick of the check could leave them unchanged, while any write
        in a later tick changes them (git's "racily clean" rule). A skipped stamp, or one
        that cannot be written, costs one more hash on the next start, never a wrong file.
        """
        tmp = stamp.with_name(f"{stamp.name}.{secrets.token_hex(6)}.tmp")
        try:
            stamp.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(_stamp(ref, before)), encoding="utf-8")
            stamped_at = tmp.stat().st_mtime_ns
            unchanged = _identity(local.stat()) == _identity(before)
            if unchanged and stamped_at > max(before.st_mtime_ns, before.st_ctime_ns):
                os.replace(tmp, stamp)
        except OSError as err:
            log.warning("cannot write verification stamp %s: %s", stamp, err)
        finally:
            tmp.unlink(missing_ok=True)

    def load_template(self, manifest: Manifest) -> VersionIndex:
        """The version's template (PCA, shared coarse quantizer, codebooks), verified."""
        return load_template(self.fetch(manifest.trained))

    def load_partition(self, manifest: Manifest, number: int, version: VersionIndex) -> Served:
        """Fetch, verify and memory-map partition `number` of `manifest`."""
        started = time.perf_counter()
        info = manifest.partition_files[number]
        index_path = self.fetch(info.index)
        features_path = self.fetch(info.features)
        metadata_path = self.fetch(info.metadata) if info.metadata is not None else None
        partition = load_partition(number, index_path, features_path, version, metadata_path)
        paths = read_paths(features_path)
        held = (int(partition.index.ntotal), len(partition.features.ids), len(paths))
        if any(count != info.count for count in held):
            raise CorruptIndex(
                f"partition {number} of {manifest.version} holds {held} (index, ids, paths) "
                f"entries; the manifest says {info.count}"
            )
        self.metrics.load_seconds.observe(time.perf_counter() - started)
        return Served(info, partition, paths)

    def discard(self, refs: Iterable[FileRef], keep: set[str]) -> None:
        """Delete the local copies of `refs` whose key is not in `keep` (still used), and
        their stamps.

        Unlinking a memory-mapped file is safe on POSIX: searches still running on the
        old mapping finish; the disk space is freed when the last mapping goes.
        """
        for ref in refs:
            if ref.key not in keep:
                for path, root in (
                    (self.path_of(ref), self.root),
                    (self.stamp_of(ref), self.stamps),
                ):
                    path.unlink(missing_ok=True)
                    _prune(path.parent, root)

    def sweep(self, keep: set[str]) -> int:
        """Delete every cached file whose key is not in `keep`; how many were deleted.

        Cleans what an earlier run of this pod left behind (older versions, partitions it
        no longer owns, temp files of interrupted downloads), so the cache volume holds
        only what is served. Stamps of those files, and temp files of interrupted stamp
        writes, go the same way; they are not counted.
        """
        deleted = _delete_all_but(self.root, keep)
        _delete_all_but(self.stamps, keep)
        return deleted


def _delete_all_but(root: Path, keep: set[str]) -> int:
    """Delete every file under `root` whose relative key is not in `keep`; how many."""
    if not root.is_dir():
        return 0
    deleted = 0
    for folder, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            path = Path(folder) / name
            if path.relative_to(root).as_posix() not in keep:
                path.unlink(missing_ok=True)
                deleted += 1
        _prune(Path(folder), root)
    return deleted


def _prune(folder: Path, root: Path) -> None:
    """Remove empty folders from `folder` up to (not including) `root`."""
    while folder != root and folder.is_relative_to(root):
        try:
            folder.rmdir()
        except OSError:
            return  # not empty (or already gone): stop climbing
        folder = folder.parent
