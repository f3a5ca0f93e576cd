"""Filtered search: only rows whose metadata satisfies the filter, selected inside the search.

A filter is never applied to an unfiltered top-k: with a filter that keeps 1 % of the
images, an unfiltered top 100 holds about one match, so post-filtering would answer with
almost nothing (or nothing) while thousands of matches exist. The selection is made
first, from the partitions' memory-mapped metadata tables (`common.metatable.filter_mask`),
and the search then only ever sees selected rows. Two paths, by how many rows the filter
selects over the requested partitions:

- **exact** (at most `SIMSEARCH_FILTER_EXACT_MAX`, default 20,000): the selected rows'
  stored vectors are scored against the queries, all of them, a block at a time (gather
  from the memory map, float16 → float32, one matrix product for the whole batch): about
  1 µs per row on one core for 256 float16 dimensions, so a rare filter costs little and
  never probes lists that hold almost nothing it wants. The answer is exact (approx =
  exact).
- **ivf** (more): the usual IVF scan, with an id selector (`faiss.IDSelectorBatch` of the
  selected ids, or `IDSelectorNot` of the others when those are fewer) passed in the
  per-call search parameters, so FAISS skips every other id inside its kernels; then the
  exact re-rank as without a filter. FAISS 1.15.1 honours the selector in
  `search_preassigned` for fast-scan lists (every kernel implementation) and for flat and
  8-bit PQ lists (`tests/unit/shard/test_filtered.py` checks both). nprobe is scaled by
  1/selectivity (`ceil(nprobe / s)`, at most nlist): a list then holds, on average, as
  many *selected* vectors as it would hold vectors without a filter, so the scan sees as
  many candidates as an unfiltered one and recall stays where the recall probe put it.

Both cut their `k·refine` candidates by (score, id), the rule of `common.ann.candidates`,
and score exactly with `Stack.exact`, the same function as the unfiltered re-rank, so a
shard on either path reports scores the router can merge with any other shard's.

What a filter selects in a partition set does not change while the version is held, so
the selection (rows, ids or the id selector) is cached per version (`VersionIndex.selection`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np

from simsearch.common.ann import Template, candidates
from simsearch.common.errors import InvalidFilter
from simsearch.common.filters import Filter
from simsearch.common.metatable import filter_mask
from simsearch.common.topk import Candidates

if TYPE_CHECKING:
    from simsearch.shard.searcher import Stack

__all__ = [
    "EXACT_PATH",
    "IVF_PATH",
    "Selection",
    "exact_candidates",
    "ivf_candidates",
    "scaled_nprobe",
    "select",
]

EXACT_PATH = "exact"
IVF_PATH = "ivf"
EXACT_BLOCK = 4096  # selected rows gathered and scored at a time (bounds the float32 copy)
_NO_ID = np.iinfo(np.int64).max  # sorts empty slots last among equal scores


@dataclass(frozen=True)
class Selection:
    """What one filter selects in one partition set (a stack's slots).

    The exact path keeps the selected rows of each slot and their ids (at most the
    threshold); the IVF path keeps only the id selector (`keep` holds what it points at:
    FAISS' `IDSelectorNot` does not own its operand).
    """

    count: int  # rows selected
    total: int  # rows in the partition set
    path: str  # EXACT_PATH or IVF_PATH
    rows: tuple[np.ndarray, ...] = ()  # exact: selected row numbers of each slot
    ids: np.ndarray | None = None  # exact: their ids, slot by slot
    selector: Any | None = None  # ivf: None when every row is selected
    keep: tuple[Any, ...] = ()

    @property
    def fraction(self) -> float:
        """Selectivity: the share of the partition set's rows the filter keeps."""
        return self.count / self.total if self.total else 0.0


def select(node: Filter, stack: Stack, exact_max: int) -> Selection:
    """Evaluate a checked filter over every slot of `stack`, and choose the path."""
    masks = [_slot_mask(node, stack, slot) for slot in range(len(stack.tables))]
    count = sum(int(np.count_nonzero(mask)) for mask in masks)
    total = sum(len(mask) for mask in masks)
    if count <= exact_max:
        rows = tuple(np.flatnonzero(mask) for mask in masks)
        ids = [stack.slot_ids[slot][r] for slot, r in enumerate(rows)]
        chosen = np.concatenate(ids) if ids else np.zeros(0, np.int64)
        return Selection(count, total, EXACT_PATH, rows, chosen)
    if count == total:  # everything: a plain scan
        return Selection(count, total, IVF_PATH)
    selector, keep = _selector(masks, stack.slot_ids, count, total)
    return Selection(count, total, IVF_PATH, selector=selector, keep=keep)


def _slot_mask(node: Filter, stack: Stack, slot: int) -> np.ndarray:
    table = stack.tables[slot]
    if table is None:  # the manifest has a schema, so every partition has a table
        number = int(stack.numbers[slot])
        raise InvalidFilter(f"partition {number} was loaded without its metadata table")
    return filter_mask(node, table)


def _selector(
    masks: list[np.ndarray], slot_ids: list[np.ndarray], count: int, total: int
) -> tuple[Any, tuple[Any, ...]]:
    """An id selector over the smaller side: the selected ids, or NOT the others.

    Building FAISS' hash set costs ~0.25 µs per id (0.12 s for 500k), so selecting 90 %
    of a million rows is cheaper as "not these 100k".
    """
    negate = count > total - count
    pairs = zip(slot_ids, masks, strict=True)
    picked = [ids[~mask] if negate else ids[mask] for ids, mask in pairs]
    batch_ids = np.ascontiguousarray(np.concatenate(picked), dtype=np.int64)
    batch = faiss.IDSelectorBatch(len(batch_ids), faiss.swig_ptr(batch_ids))  # copies the ids
    if not negate:
        return batch, (batch,)
    return faiss.IDSelectorNot(batch), (batch,)


def scaled_nprobe(nprobe: int, selection: Selection, nlist: int) -> int:
    """`ceil(nprobe / selectivity)`, at most nlist: as many selected vectors per scan as
    an unfiltered scan sees vectors."""
    if selection.count <= 0:
        return max(1, min(nprobe, nlist))
    scaled = -(-nprobe * selection.total // selection.count)
    return max(1, min(scaled, nlist))


def ivf_candidates(
    stack: Stack, selection: Selection, template: Template, xq: np.ndarray, kc: int, nprobe: int
) -> Candidates:
    """The IVF path: the stack scanned with the selector and a scaled nprobe, re-ranked."""
    coarse_d, coarse_i = template.coarse(xq, scaled_nprobe(nprobe, selection, template.nlist))
    dist, ids = candidates(stack.index, xq, kc, coarse_i, coarse_d, selection.selector)
    return Candidates(ids, dist, stack.exact(xq, ids))


def exact_candidates(stack: Stack, selection: Selection, xq: np.ndarray, kc: int) -> Candidates:
    """The exact path: every selected row scored; the best `kc` by (score, id)."""
    ids = selection.ids if selection.ids is not None else np.zeros(0, np.int64)
    scores = np.empty((len(xq), len(ids)), dtype=np.float32)
    done = 0
    for slot, rows in enumerate(selection.rows):
        vectors = stack.vectors[slot]
        for start in range(0, len(rows), EXACT_BLOCK):
            block = np.asarray(vectors[rows[start : start + EXACT_BLOCK]], dtype=np.float32)
            scores[:, done : done + len(block)] = xq @ block.T
            done += len(block)
    found = _best(scores, ids, kc)
    # scored again by the re-rank's own code: bit for bit what the IVF path reports
    exact = stack.exact(xq, found)
    order = _order(exact, found)
    found = np.take_along_axis(found, order, axis=1)
    exact = np.take_along_axis(exact, order, axis=1)
    return Candidates(found, exact, exact.copy())


def _best(scores: np.ndarray, ids: np.ndarray, kc: int) -> np.ndarray:
    """Ids of each row's `kc` best scores (ties: lower id), -1 padded when fewer."""
    nq, count = scores.shape
    out = np.full((nq, kc), -1, dtype=np.int64)
    if count == 0 or kc == 0:
        return out
    if count <= kc:
        order = np.lexsort((np.broadcast_to(ids, scores.shape), -scores), axis=1)
        out[:, :count] = ids[order]
        return out
    part = np.argpartition(-scores, kc - 1, axis=1)[:, :kc]
    threshold = np.take_along_axis(scores, part, axis=1).min(axis=1)
    for q in range(nq):  # every score ≥ the kc-th, so that ties at the cut go by id
        near = np.flatnonzero(scores[q] >= threshold[q])
        out[q] = ids[near[np.lexsort((ids[near], -scores[q, near]))][:kc]]
    return out


def _order(scores: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Column order by score descending, then id; empty slots last."""
    key = np.where(ids < 0, -np.inf, scores)
    return np.lexsort((np.where(ids < 0, _NO_ID, ids), -key), axis=1)
