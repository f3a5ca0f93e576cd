"""Partition files from the object store to a searchable, memory-mapped partition.

`PartitionCache` keeps a local copy of every file the shard serves, at
`<cache_dir>/<index>/<FileRef.key>` — the same relative key the manifest uses, so a file
that an incremental build references from an older version is downloaded once and shared
by both versions. Every file is verified (size, then sha256) against the manifest before
it is used: a file already in the cache that verifies is reused without a download (a
restarted pod is ready in the time it takes to hash its files); one that does not is
removed and downloaded again. Downloads are atomic (`ObjectStore.download_file`), so a
crash never leaves a half file that could pass for a cached one.

`load_partition` then memory-maps the partition (`searcher.load_partition`) and reads its
`paths` into memory: every search answer carries the path of each candidate, and a
partition's paths are a few MB at most (~80 bytes × its vectors), so holding them beats
opening the HDF5 file for every request (h5py serialises all access behind one lock).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import faiss
import h5py
import numpy as np

from simsearch.common.layout import (
    CorruptIndex,
    FileRef,
    IndexLayout,
    Manifest,
    PartitionInfo,
    verify_file,
)
from simsearch.shard.metrics import ShardMetrics
from simsearch.shard.searcher import Partition, load_partition, load_quantizer

__all__ = ["PartitionCache", "Served", "read_paths"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Served:
    """A partition ready to search: its FAISS index, its exact vectors and its paths."""

    info: PartitionInfo
    partition: Partition
    paths: np.ndarray  # object array of str, row-aligned with partition.features

    @property
    def number(self) -> int:
        return self.info.partition

    def refs(self) -> tuple[FileRef, FileRef]:
        return self.info.index, self.info.features


def read_paths(path: Path) -> np.ndarray:
    """The `paths` dataset of a features.h5 as an object array of str."""
    with h5py.File(path, "r") as h5:
        paths: np.ndarray = np.asarray(h5["paths"].asstr()[:], dtype=object)
    return paths


class PartitionCache:
    """Verified local copies of index files, and loading partitions from them."""

    def __init__(self, layout: IndexLayout, cache_dir: Path, metrics: ShardMetrics) -> None:
        self.layout = layout
        self.root = cache_dir / layout.name
        self.metrics = metrics

    def path_of(self, ref: FileRef) -> Path:
        """Where the local copy of `ref` lives (FileRef keys are checked relative paths)."""
        return self.root.joinpath(*ref.key.split("/"))

    def fetch(self, ref: FileRef) -> Path:
        """A verified local copy of `ref`: the cached one if it verifies, else a download.

        Raises `CorruptIndex` when the downloaded bytes do not match the manifest (the bad
        copy is deleted, so the next attempt downloads again) and `StorageError` /
        `ObjectNotFound` when the store fails.
        """
        local = self.path_of(ref)
        if local.is_file():
            try:
                verify_file(local, ref)
            except CorruptIndex as err:
                log.warning("cached file failed verification, downloading again: %s", err.reason)
                local.unlink(missing_ok=True)
            else:
                self.metrics.cache_hits.inc()
                return local
        self.layout.store.download_file(self.layout.resolve(ref), local)
        self.metrics.downloaded_bytes.inc(local.stat().st_size)
        try:
            verify_file(local, ref)
        except CorruptIndex as err:
            local.unlink(missing_ok=True)
            raise CorruptIndex(
                f"{self.layout.store.url_for(self.layout.resolve(ref))} does not match the "
                f"manifest: {err.reason}"
            ) from err
        return local

    def load_quantizer(self, manifest: Manifest) -> faiss.Index:
        """The version's shared coarse quantizer, from its verified `trained.faiss`."""
        return load_quantizer(self.fetch(manifest.trained))

    def load_partition(self, manifest: Manifest, number: int, quantizer: faiss.Index) -> Served:
        """Fetch, verify and memory-map partition `number` of `manifest`."""
        started = time.perf_counter()
        info = manifest.partition_files[number]
        index_path = self.fetch(info.index)
        features_path = self.fetch(info.features)
        partition = load_partition(number, index_path, features_path, quantizer)
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
        """Delete the local copies of `refs` whose key is not in `keep` (still used).

        Unlinking a memory-mapped file is safe on POSIX: searches still running on the
        old mapping finish; the disk space is freed when the last mapping goes.
        """
        for ref in refs:
            if ref.key not in keep:
                path = self.path_of(ref)
                path.unlink(missing_ok=True)
                self._prune(path.parent)

    def sweep(self, keep: set[str]) -> int:
        """Delete every cached file whose key is not in `keep`; how many were deleted.

        Cleans what an earlier run of this pod left behind (older versions, partitions it
        no longer owns, temp files of interrupted downloads), so the cache volume holds
        only what is served.
        """
        if not self.root.is_dir():
            return 0
        deleted = 0
        for folder, _dirs, files in os.walk(self.root, topdown=False):
            for name in files:
                path = Path(folder) / name
                if path.relative_to(self.root).as_posix() not in keep:
                    path.unlink(missing_ok=True)
                    deleted += 1
            self._prune(Path(folder))
        return deleted

    def _prune(self, folder: Path) -> None:
        """Remove empty folders from `folder` up to (not including) the cache root."""
        while folder != self.root and folder.is_relative_to(self.root):
            try:
                folder.rmdir()
            except OSError:
                return  # not empty (or already gone): stop climbing
            folder = folder.parent
