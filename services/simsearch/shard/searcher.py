"""Searching a shard's partitions: coarse quantisation once, then only the lists asked for.

All partitions of a version share the template (`trained.faiss`: optional PCA, coarse
quantizer, codebooks), held once per version by a `VersionIndex`, which also owns the
stacks built from its partitions and so releases them with the version. A query is
projected into the scoring space and assigned to its `nprobe` nearest lists once per
shard; the requested partitions' lists are combined into one IVF index and scanned once
(`search_preassigned`). The best `k·refine` candidates are then re-scored exactly from the
memory-mapped `features.h5` of their partitions, found through one sorted id table of the
stack (a `searchsorted` per query batch, not a look-up per partition).

Two kinds of lists. 8-bit PQ and flat lists (older plans, the exact plan) are
memory-mapped and stacked without a copy (`HStackInvertedLists`). 4-bit PQ lists are
searched with FAISS' fast-scan kernels, whose block layout can be neither memory-mapped
nor stacked: the partitions' flat codes stay memory-mapped (page cache), and a stack is
a copy of them packed into fast-scan blocks in RAM (128 B per vector at PQ256x4, plus
padding of short lists to 32 entries), built once per partition set and kept while the
version is held (a steady shard asks for the same set every time).
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import faiss
import numpy as np
import pyarrow as pa

from simsearch.common.ann import Template, candidates, to_fast_scan
from simsearch.common.errors import InvalidParameter
from simsearch.common.features import FeatureFile, open_features
from simsearch.common.filters import Filter
from simsearch.common.metatable import open_table
from simsearch.common.topk import Candidates
from simsearch.shard import filtered
from simsearch.shard.drift import DriftWindow

T = TypeVar("T")

MMAP_FLAGS = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY
STACKS_KEPT = 4  # partition sets a version keeps stacks for (steady state needs one)
SELECTIONS_KEPT = 8  # filters whose selection a version keeps (see `shard.filtered`)


@dataclass
class Partition:
    """One loaded partition: its inverted lists (mapped or in RAM), its exact vectors and
    its metadata table (memory-mapped; None for a version without metadata)."""

    number: int
    index: faiss.Index
    features: FeatureFile
    table: pa.Table | None = None


def load_template(trained_path: Path) -> VersionIndex:
    """A version's template (PCA, shared coarse quantizer, codebooks) and its stacks."""
    return VersionIndex(Template.read(str(trained_path)))


def load_partition(
    number: int,
    index_path: Path,
    features_path: Path,
    version: VersionIndex,
    metadata_path: Path | None = None,
) -> Partition:
    """Memory-map a partition's index, features and metadata table and attach the
    version's shared quantizer.

    The table must describe the features' rows in their order (`open_table` checks the
    ids): a filter evaluated on misaligned rows would select other images.
    """
    template = version.template
    index = faiss.read_index(str(index_path), MMAP_FLAGS)
    ivf = faiss.extract_index_ivf(index)
    if ivf.d != template.dim or ivf.nlist != template.nlist:
        raise InvalidParameter(
            f"{index_path.name}: dim {ivf.d}, {ivf.nlist} lists; the template has "
            f"{template.dim}, {template.nlist}"
        )
    ivf.quantizer = template.quantizer
    ivf.own_fields = False
    features = open_features(features_path)
    table = open_table(metadata_path, features.ids) if metadata_path is not None else None
    return Partition(number, index, features, table)


class VersionIndex:
    """The search state of one held version: its template and the stacks of its partitions.

    Owned by the shard's record of the version, so dropping the version releases the
    template, the quantizer and every stack (and with them the memory maps they keep).
    """

    def __init__(self, template: Template) -> None:
        self.template = template
        self._stacks: OrderedDict[tuple[int, ...], Stack] = OrderedDict()
        self._selections: OrderedDict[tuple[object, ...], Any] = OrderedDict()
        self._lock = threading.Lock()
        self.drift: DriftWindow | None = None  # live centroid distances, from the first query
        self._measures_drift = template.nlist > 1  # one list (the exact plan): nothing to fit

    def drift_window(self, window_s: float) -> DriftWindow | None:
        """The version's drift window (made on first use); None for a one-list template,
        whose single centroid says nothing about fit (see `shard.drift`)."""
        found = self.drift
        if found is None and self._measures_drift:
            with self._lock:
                if self.drift is None:
                    self.drift = DriftWindow(window_s, self.template.centroid_distance)
                found = self.drift
        return found

    def stack(self, parts: list[Partition]) -> Stack:
        """One index over `parts` (sorted by number), cached by the partitions' identity."""
        key = tuple(id(part.index) for part in parts)
        with self._lock:
            found = self._stacks.get(key)
            if found is not None:
                self._stacks.move_to_end(key)
                return found
        made = _combined(parts, self.template)
        release_free_memory()  # the flat copy packed into `made` is gone: give it back
        with self._lock:
            self._stacks[key] = made
            while len(self._stacks) > STACKS_KEPT:
                self._stacks.popitem(last=False)
        return made

    def forget_stacks(self) -> None:
        """Drop every stack (partitions left: stacks holding them must not keep them alive)."""
        with self._lock:
            self._stacks.clear()
            self._selections.clear()

    def selection(self, key: tuple[object, ...], make: Callable[[], T]) -> T:
        """The cached value of `key` (a filter over a partition set), made on a miss.

        What a filter selects in a given set of partitions never changes while the version
        is held, and a selection can cost more than the scan (an id set of 500k entries
        takes ~0.1 s to build), so the last `SELECTIONS_KEPT` are kept. Two searches
        missing the same key at once both make it; the second one kept wins, harmlessly.
        """
        with self._lock:
            found = self._selections.get(key)
            if found is not None:
                self._selections.move_to_end(key)
                return cast(T, found)
        made = make()
        with self._lock:
            self._selections[key] = made
            while len(self._selections) > SELECTIONS_KEPT:
                self._selections.popitem(last=False)
        return made


class Searcher:
    """The partitions of one index version that this shard holds."""

    def __init__(self, version: VersionIndex, partitions: dict[int, Partition], total: int):
        self.version = version
        self.template = version.template
        self.partitions = partitions
        self.total = total  # P: an id lives in partition id mod P

    def search(
        self,
        queries: np.ndarray,
        k: int,
        wanted: Sequence[int],
        nprobe: int,
        refine: int,
        projected: bool = False,
        drift: DriftWindow | None = None,
    ) -> Candidates:
        """Top `k·refine` candidates over `wanted` partitions, with approx and exact scores.

        `queries` are unit vectors of the model's space, or of the scoring space if
        `projected` (a stored vector, as `/search/similar` sends). `drift`, when given,
        receives each query's distance to its nearest list centroid (`shard.drift`).
        """
        missing = [p for p in wanted if p not in self.partitions]
        if missing:
            raise InvalidParameter(f"partitions {missing[:8]} are not loaded on this shard")
        nq = len(queries)
        kc = k * max(1, refine)
        if not wanted:
            return Candidates.empty(nq)
        xq = np.ascontiguousarray(queries, dtype=np.float32)
        if not projected:
            xq = self.template.project(xq)
        coarse_d, coarse_i = self.template.coarse(xq, nprobe)
        if drift is not None:
            drift.observe(xq, coarse_d, coarse_i)  # measured later, many batches at once
        stack = self.stack_of(wanted)
        # one scan over the stacked lists, cut at kc by (score, id): no heap to merge
        dist, ids = candidates(stack.index, xq, kc, coarse_i, coarse_d)
        return Candidates(ids, dist, stack.exact(xq, ids))

    def search_filtered(
        self,
        queries: np.ndarray,
        k: int,
        wanted: Sequence[int],
        nprobe: int,
        refine: int,
        node: Filter,
        exact_max: int,
        projected: bool = False,
    ) -> tuple[Candidates, str]:
        """`search` restricted to the rows `node` selects, and the path taken (`filtered`).

        A method of its own so that the unfiltered search stays as it was, not one check
        longer.
        """
        missing = [p for p in wanted if p not in self.partitions]
        if missing:
            raise InvalidParameter(f"partitions {missing[:8]} are not loaded on this shard")
        nq = len(queries)
        kc = k * max(1, refine)
        if not wanted:
            return Candidates.empty(nq), filtered.EXACT_PATH
        xq = np.ascontiguousarray(queries, dtype=np.float32)
        if not projected:
            xq = self.template.project(xq)
        stack = self.stack_of(wanted)
        key = (tuple(sorted(set(wanted))), node.model_dump_json(), exact_max)
        selection = self.version.selection(key, lambda: filtered.select(node, stack, exact_max))
        if selection.path == filtered.EXACT_PATH:
            return filtered.exact_candidates(stack, selection, xq, kc), selection.path
        found = filtered.ivf_candidates(stack, selection, self.template, xq, kc, nprobe)
        return found, selection.path

    def locate(self, ids: np.ndarray, wanted: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Partition number and row of each id among `wanted` (-1, -1 where absent)."""
        return self.stack_of(wanted).locate(ids)

    def stack_of(self, wanted: Sequence[int]) -> Stack:
        return self.version.stack([self.partitions[p] for p in sorted(set(wanted))])


@dataclass
class Stack:
    """Several partitions as one: a stacked IVF index and one sorted id table over them.

    `slot`/`row` say where each id of `sorted_ids` lives (which partition of `numbers`,
    which row of its features), so the exact re-rank and the path look-up of a whole
    query batch are one `searchsorted` and one gather per partition touched.
    """

    index: Any  # the IVF index whose lists are the stack
    keep: tuple[Any, ...]  # what the stack points at, kept alive with it
    numbers: np.ndarray  # partition number of each slot
    vectors: list[np.ndarray]  # memory-mapped features of each slot
    slot_ids: list[np.ndarray]  # the ids of each slot, in row order
    tables: list[pa.Table | None]  # memory-mapped metadata of each slot (filters)
    sorted_ids: np.ndarray
    slot: np.ndarray
    row: np.ndarray

    @classmethod
    def build(cls, index: Any, keep: tuple[Any, ...], parts: list[Partition]) -> Stack:
        ids = [part.features.ids for part in parts]
        all_ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
        order = np.argsort(all_ids, kind="stable")
        counts = [len(i) for i in ids]
        slot = np.repeat(np.arange(len(parts), dtype=np.int32), counts)
        row = np.concatenate(
            [np.arange(c, dtype=np.int64) for c in counts] or [np.zeros(0, np.int64)]
        )
        return cls(
            index,
            keep,
            np.array([part.number for part in parts], dtype=np.int64),
            [np.asarray(part.features.vectors) for part in parts],  # plain views: fast gathers
            ids,
            [part.table for part in parts],
            all_ids[order],
            slot[order],
            row[order],
        )

    def _find(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flat positions of the ids present here, and their positions in `sorted_ids`."""
        flat = ids.ravel()
        if not len(self.sorted_ids):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        pos = np.minimum(np.searchsorted(self.sorted_ids, flat), len(self.sorted_ids) - 1)
        found = np.flatnonzero((flat >= 0) & (self.sorted_ids[pos] == flat))
        return found, pos[found]

    def locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Partition number and row of each id (-1 where the id is not in the stack)."""
        numbers = np.full(ids.size, -1, dtype=np.int64)
        rows = np.full(ids.size, -1, dtype=np.int64)
        found, pos = self._find(ids)
        numbers[found] = self.numbers[self.slot[pos]]
        rows[found] = self.row[pos]
        return numbers.reshape(ids.shape), rows.reshape(ids.shape)

    def exact(self, xq: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Exact inner product of each candidate with its query (-inf for empty slots)."""
        scores = np.full(ids.shape, -np.inf, dtype=np.float32)
        found, pos = self._find(ids)
        if not found.size:
            return scores
        slots, rows = self.slot[pos], self.row[pos]
        # one gather per partition touched, over runs of a slot-sorted order (a boolean
        # mask per partition cost ~10 µs each, 0.3 ms a query over 32 partitions)
        order = np.argsort(slots, kind="stable")
        sorted_slots = slots[order]
        starts = np.flatnonzero(np.r_[True, sorted_slots[1:] != sorted_slots[:-1]])
        ends = np.r_[starts[1:], len(order)]
        cand = np.empty((found.size, xq.shape[1]), dtype=np.float32)
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            picked = order[start:end]
            cand[picked] = self.vectors[int(sorted_slots[start])][rows[picked]]
        query_of = found // ids.shape[1]
        scores.ravel()[found] = np.einsum("ij,ij->i", xq[query_of], cand)
        return scores


def _combined(parts: list[Partition], template: Template) -> Stack:
    """One IVF index over several partitions' inverted lists.

    Scanning partitions one by one recomputes the look-up tables of every probed list
    once per partition (64 partitions: 64× the work of one index), and fast-scan would
    pad every tiny per-partition list to a block of 32. One index over the partitions
    asked for makes one scan with the tables computed once per query. Its quantizer is
    the version's shared one.
    """
    combo: Any = template.shell()  # empty, same codebooks and parameters
    if template.fast_scan:
        for part in parts:
            _append_lists(faiss.extract_index_ivf(part.index).invlists, combo.invlists)
        combo.ntotal = sum(faiss.extract_index_ivf(part.index).ntotal for part in parts)
        combo = to_fast_scan(combo)  # the flat merged copy is freed once packed
        keep: tuple[Any, ...] = (tuple(parts),)
    else:
        swig: Any = faiss  # InvertedListsPtrVector is not in faiss' stubs
        lists = swig.InvertedListsPtrVector()
        for part in parts:
            lists.push_back(faiss.extract_index_ivf(part.index).invlists)
        stacked = faiss.HStackInvertedLists(lists.size(), lists.data())
        combo.replace_invlists(stacked, False)
        combo.ntotal = sum(faiss.extract_index_ivf(part.index).ntotal for part in parts)
        keep = (stacked, lists, tuple(parts))
    return Stack.build(combo, keep, parts)


def release_free_memory() -> None:
    """Return freed heap to the OS (glibc keeps it otherwise, and it counts as anonymous).

    Building a fast-scan stack frees a flat copy as large as the stack itself; without
    this the shard's anonymous memory stays that much higher for no use.
    """
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _append_lists(source: Any, target: Any) -> None:
    """Append every entry of `source`'s lists (memory-mapped) to `target`'s (in RAM).

    `merge_from` would empty its source, which is a read-only mapping here, and FAISS
    cannot convert a stack (`HStackInvertedLists`) to fast-scan blocks directly (it
    crashes), so the flat codes are copied list by list: ~0.1 s per million vectors.
    """
    for number in range(source.nlist):
        size = source.list_size(number)
        if size:
            target.add_entries(number, size, source.get_ids(number), source.get_codes(number))
