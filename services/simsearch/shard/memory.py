"""A shard's memory as `/info` and `/metrics` report it: readings, working set, RAM held.

RSS mixes anonymous memory (heap, fast-scan stacks, the packed paths), which only this
process can hold and which a container limit and the OOM killer weigh, with the page
cache of the memory-mapped index files, which the kernel drops under pressure and reads
back on the next touch; `smaps.py` tells them apart, per kind of file.

The working set, the classic way: every `working_set_window_s` the sampler thread records
each kind's Referenced bytes (pages touched since the window began) and writes "1" to
`/proc/self/clear_refs` to clear the bits for the next window; the largest of the last
`working_set_windows` windows is reported. The kernel's LRU reads the same bits, so just
after each window the shard's pages look idle to reclaim (docs/shard.md, Memory). Where
`clear_refs` is refused the working set stays None, the reason logged once.

The exact scan maps features privately while it holds `exact.SCAN_LOCK`; smaps is read
under that lock, so those mappings are never counted. Reading and parsing smaps takes
~10 ms for a few hundred mappings and `/info` runs on the event loop that answers
searches, so the sampler refreshes a reading every `memory_sample_s` for `/info` and
`/metrics` to serve (0: read on each call); while a scan holds the lock a call serves
the last reading rather than wait.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import faiss
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from simsearch.common.wire import FileMemory, MemoryKind, ShardMemory
from simsearch.shard.collections import Collections
from simsearch.shard.exact import SCAN_LOCK
from simsearch.shard.searcher import Stack, VersionIndex
from simsearch.shard.settings import ShardSettings
from simsearch.shard.smaps import INDEX_KINDS, KINDS, Reading, parse_smaps, summarize
from simsearch.shard.versions import VersionView

__all__ = ["MemoryCollector", "MemoryMonitor", "WorkingSet", "needed_bytes"]

log = logging.getLogger(__name__)

SMAPS = Path("/proc/self/smaps")
CLEAR_REFS = Path("/proc/self/clear_refs")
SAMPLER_WAIT_S = 1.0  # the longest a call waits for the sampler's reading


class _Sample(NamedTuple):
    """One reading of smaps, when it was taken, and the RAM of stacks and paths then."""

    at: float
    reading: Reading
    stacks: int
    paths: int


class WorkingSet:
    """Each kind's referenced bytes over the last windows; the largest is the working set.

    The largest, not the mean: the memory that keeps the p99 is what the busiest recent
    window needed, and a quiet minute must not talk the estimate down.
    """

    def __init__(self, windows: int) -> None:
        self._windows: deque[dict[MemoryKind, int]] = deque(maxlen=windows)
        self._lock = threading.Lock()

    def record(self, referenced: dict[MemoryKind, int]) -> None:
        """One window just ended with these referenced bytes."""
        with self._lock:
            self._windows.append(dict(referenced))

    def measured(self) -> int:
        """How many windows the figure is over (at most `windows`)."""
        with self._lock:
            return len(self._windows)

    def current(self) -> dict[MemoryKind, int] | None:
        """Per kind, the largest over the windows kept; None before the first window ends."""
        with self._lock:
            windows = tuple(self._windows)
        if not windows:
            return None
        return {kind: max(w[kind] for w in windows) for kind in KINDS}


CACHE_SLACK = 1.4  # page cache per byte of working set that keeps p99 within 2× (measured)


def needed_bytes(anonymous: int, working: dict[MemoryKind, int] | None) -> int | None:
    """The memory that keeps p99 within 2× of the fully cached p99, estimated: everything
    anonymous (it cannot be dropped) plus `CACHE_SLACK` × the working set of every mapped
    file, libraries included (their hot pages are as needed as the index's). None until a
    window has been measured.

    Why a slack: the kernel does not keep exactly the referenced pages. It holds part of
    the file cache on its inactive list, where even hot pages are reclaimed and faulted
    back, so a limit of anonymous + 1× the working set thrashes. Measured at 1M vectors in a
    memory cgroup (docs/benchmarks.md §12): anonymous + 1.24× the working set thrashed (p99
    17× the cached one), + 1.36× held (p99 1.05×).
    """
    if working is None:
        return None
    return anonymous + round(CACHE_SLACK * sum(working[kind] for kind in KINDS))


def lists_bytes(invlists: Any) -> int:
    """RAM held by one index's inverted lists (0 for lists that are memory-mapped).

    Fast-scan lists (`BlockInvertedLists`) pack each list into blocks of `n_per_block`
    codes of `block_size` bytes, the last one padded, plus an 8-byte id per entry; plain
    in-RAM lists hold `code_size` + 8 bytes per entry. Stacked mapped lists
    (`HStackInvertedLists`) hold only pointers: their pages are page cache (`codes`).
    """
    swig: Any = faiss  # the list classes are not all in faiss' stubs
    lists = swig.downcast_InvertedLists(invlists)
    if isinstance(lists, swig.BlockInvertedLists):
        sizes = [lists.list_size(i) for i in range(lists.nlist)]
        blocks = sum(-(-n // lists.n_per_block) for n in sizes)
        return int(blocks * lists.block_size + 8 * sum(sizes))
    if isinstance(lists, swig.ArrayInvertedLists):
        return int(lists.compute_ntotal() * (lists.code_size + 8))
    return 0


def stack_bytes(stack: Stack) -> int:
    """RAM of one stack: its lists (`lists_bytes`) and its id tables (sorted ids, slot, row).

    An estimate from FAISS' sizes, not a count of allocations: capacity reserved beyond
    each list's size and the allocator's overhead are left out.
    """
    tables = stack.sorted_ids.nbytes + stack.slot.nbytes + stack.row.nbytes
    return int(tables) + lists_bytes(faiss.extract_index_ivf(stack.index).invlists)


def held_stacks(index: VersionIndex) -> list[Stack]:
    """The stacks a version keeps, copied under its lock (`VersionIndex` has no public
    accessor for them; the stack cache is its own business, only read here)."""
    with index._lock:
        return list(index._stacks.values())


class MemoryMonitor:
    """The shard's memory figures: cached smaps readings and the working-set sampler.

    `smaps` and `clear_refs` are the files read and written (the process's own; tests
    pass fixtures), `clock` the time source of the reading's age.
    """

    def __init__(
        self,
        settings: ShardSettings,
        collections: Collections,
        smaps: Path = SMAPS,
        clear_refs: Path = CLEAR_REFS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_s = settings.working_set_window_s
        self.sample_s = settings.memory_sample_s
        self.cache_root = str(settings.cache_path.resolve())
        self.collections = collections
        self.smaps, self.clear_refs, self.clock = smaps, clear_refs, clock
        self.working = WorkingSet(settings.working_set_windows)
        self._last: _Sample | None = None
        self._lock = threading.Lock()  # guards `_last`
        self._stack_sizes: dict[int, tuple[weakref.ref[Stack], int]] = {}
        self._unreadable = False  # logged once
        self.refused: str | None = None  # why clear_refs was refused, if it was
        self._sampling = threading.Event()  # the sampler holds SCAN_LOCK
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- the sampler thread

    def start(self) -> None:
        """Start the sampler thread: it ends working-set windows (unless the window is 0)
        and refreshes the reading every `memory_sample_s` (unless 0: read on each call)."""
        if (self.window_s > 0 or self.sample_s > 0) and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="memory", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the sampler and wait for it (it wakes at once)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self) -> None:
        """Clear the bits (a window begins); then end a window every `window_s` and, in
        between, refresh the reading every `sample_s`, so that `/info` and `/metrics`
        (on the event loop) only ever take the cached one."""
        measuring = self.window_s > 0 and self.begin_window()
        window_ends = time.monotonic() + self.window_s
        while True:
            waits = [window_ends - time.monotonic()] if measuring else []
            waits += [self.sample_s] if self.sample_s > 0 else []
            if not waits or self._stop.wait(max(0.0, min(waits))):
                return
            if measuring and time.monotonic() >= window_ends:
                measuring = self.end_window()
                window_ends = time.monotonic() + self.window_s  # from the clear
            else:
                with self._locked():
                    self._read()  # the sample /info and /metrics serve

    def begin_window(self) -> bool:
        """Clear the referenced bits: a window begins. False where the kernel refuses."""
        with self._locked():
            return self._clear()

    def end_window(self) -> bool:
        """Record the window just ended (each kind's Referenced) and begin the next one;
        False when that is impossible (smaps unreadable, clear_refs refused)."""
        with self._locked():
            sample = self._read()
            cleared = sample is not None and self._clear()
        if sample is not None and cleared:
            self.working.record(sample.reading.referenced)
        return cleared

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """SCAN_LOCK for the sampler's own reading, flagged so that a caller who finds the
        lock taken knows a reading is coming, not a scan (see `sample`)."""
        with SCAN_LOCK:
            self._sampling.set()
            try:
                yield
            finally:
                self._sampling.clear()

    def _clear(self) -> bool:
        """Clear the referenced bits of every page; False (logged once) where refused."""
        if self.refused is not None:
            return False
        try:
            self.clear_refs.write_text("1", encoding="ascii")
        except OSError as err:
            self.refused = f"{self.clear_refs}: {err.strerror or err}"
            log.warning("working set not measured: cannot write %s", self.refused)
            return False
        return True

    # ---- readings

    def _read(self) -> _Sample | None:
        """A fresh sample (the caller holds SCAN_LOCK), cached; None where smaps is
        unreadable (not Linux), logged once. The RAM of stacks and paths is summed here
        too, off the event loop when the sampler runs it."""
        try:
            text = self.smaps.read_text(encoding="utf-8", errors="replace")
        except OSError as err:
            if not self._unreadable:
                log.warning("memory not reported: cannot read %s: %s", self.smaps, err)
            self._unreadable = True
            return None
        reading = summarize(parse_smaps(text), self.cache_root)
        views = [v for c in self.collections.all() for v in c.holdings.views()]
        sample = _Sample(self.clock(), reading, self._stacks_bytes(views), paths_bytes(views))
        with self._lock:
            self._last = sample
        return sample

    def sample(self) -> _Sample | None:
        """The cached sample while it is fresh, else a fresh one; the last one while an
        exact scan holds the lock (None if there is none yet).

        Fresh: younger than `memory_sample_s`, or twice that while the sampler refreshes
        it (so a call just before its refresh does not read smaps as well).
        """
        with self._lock:
            last = self._last
        max_age = self.sample_s * (2 if self._thread is not None else 1)
        if last is not None and self.clock() - last.at < max_age:
            return last
        if not SCAN_LOCK.acquire(blocking=False):
            return self._after_sampler() if self._sampling.is_set() else last
        try:
            return self._read()
        finally:
            SCAN_LOCK.release()

    def _after_sampler(self) -> _Sample | None:
        """The sample the sampler is taking now: it holds the lock for a few ms, so wait
        for it (bounded: an exact scan may take the lock right after)."""
        if SCAN_LOCK.acquire(timeout=SAMPLER_WAIT_S):
            SCAN_LOCK.release()
        with self._lock:
            return self._last

    def memory(self) -> ShardMemory | None:
        """`/info`'s memory: the last sample and the working set."""
        sample = self.sample()
        if sample is None:
            return None
        reading, working = sample.reading, self.working.current()
        files = {
            kind: FileMemory(
                mapped_bytes=reading.mapped[kind],
                resident_bytes=reading.resident[kind],
                working_set_bytes=working[kind] if working is not None else None,
            )
            for kind in KINDS
        }
        return ShardMemory(
            anonymous_bytes=reading.anonymous,
            file_bytes=reading.file,
            mapped_bytes=sum(reading.mapped.values()),
            files=files,
            stacks_bytes=sample.stacks,
            paths_bytes=sample.paths,
            working_set_bytes=(
                sum(working[k] for k in INDEX_KINDS) if working is not None else None
            ),
            working_set_window_s=self.window_s * self.working.measured(),
            needed_bytes=needed_bytes(reading.anonymous, working),
        )

    def _stacks_bytes(self, views: Iterable[VersionView]) -> int:
        """RAM of the stacks of every held version; each stack's size is computed once
        (it never changes) and forgotten with the stack."""
        indexes = {id(v.index): v.index for v in views if v.index is not None}
        stacks = [stack for index in indexes.values() for stack in held_stacks(index)]
        sizes: dict[int, tuple[weakref.ref[Stack], int]] = {}
        for stack in stacks:
            entry = self._stack_sizes.get(id(stack))
            if entry is None or entry[0]() is not stack:
                entry = (weakref.ref(stack), stack_bytes(stack))
            sizes[id(stack)] = entry
        self._stack_sizes = sizes  # only `_read` uses it, under SCAN_LOCK
        return sum(size for _ref, size in sizes.values())


def paths_bytes(views: Iterable[VersionView]) -> int:
    """RAM of the packed paths of every ready partition of every held version."""
    held = {id(s.paths): s.paths for v in views for s in v.ready.values()}
    return sum(paths.nbytes for paths in held.values())


class MemoryCollector(Collector):
    """`simsearch_shard_memory_*` at scrape time, from the monitor's cached reading.

    A collector of its own, registered on the shard's registry beside `ShardMetrics`: the
    figures are read when scraped, not pushed. Every kind is always there (0 when nothing
    of it is mapped); the working set and needed bytes are absent until measured.
    """

    def __init__(self, monitor: MemoryMonitor) -> None:
        self.monitor = monitor

    def describe(self) -> Iterator[Metric]:
        """The families without samples: registration checks names without reading smaps."""
        yield from _families(None)

    def collect(self) -> Iterator[Metric]:
        yield from _families(self.monitor.memory())


_GAUGES: dict[str, tuple[str, bool]] = {  # after simsearch_shard_memory_: (help, by kind)
    "anonymous_bytes": (
        "Anonymous memory (heap, stacks, paths): what limits and OOM weigh.",
        False,
    ),
    "file_bytes": ("Resident file-backed memory (mapped page cache), by kind.", True),
    "mapped_bytes": ("Size of the file mappings, by kind.", True),
    "working_set_bytes": ("File pages referenced per window, the largest of the last ones.", True),
    "needed_bytes": ("Estimated memory that keeps p99 within 2x of the fully cached p99.", False),
    "stacks_bytes": ("Of the anonymous memory: fast-scan stacks packed in RAM.", False),
    "paths_bytes": ("Of the anonymous memory: stored paths held packed.", False),
}


def _families(memory: ShardMemory | None) -> Iterator[Metric]:
    """The seven gauge families, filled from `memory` (without samples when None)."""
    gauges = {
        name: GaugeMetricFamily(
            f"simsearch_shard_memory_{name}", doc, labels=["kind"] if by_kind else None
        )
        for name, (doc, by_kind) in _GAUGES.items()
    }
    if memory is not None:
        gauges["anonymous_bytes"].add_metric([], memory.anonymous_bytes)
        for kind, figures in memory.files.items():
            gauges["file_bytes"].add_metric([kind], figures.resident_bytes)
            gauges["mapped_bytes"].add_metric([kind], figures.mapped_bytes)
            if figures.working_set_bytes is not None:
                gauges["working_set_bytes"].add_metric([kind], figures.working_set_bytes)
        if memory.needed_bytes is not None:
            gauges["needed_bytes"].add_metric([], memory.needed_bytes)
        gauges["stacks_bytes"].add_metric([], memory.stacks_bytes)
        gauges["paths_bytes"].add_metric([], memory.paths_bytes)
    yield from gauges.values()
