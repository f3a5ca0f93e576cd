"""The shard's memory figures: working set over windows, needed bytes, the cached reading,
`clear_refs` refused, the RAM of stacks and paths, and the Prometheus collector.

The monitor reads an smaps fixture file and writes a `clear_refs` file of the test's own
(a real process's are read by the integration test); the clock is a fake one moved by
hand, so the cache age is stepped through without sleeping. Stacks and paths are measured
on a real fast-scan index loaded by a real `ShardService`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import faiss
import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from simsearch.common.layout import IndexLayout
from simsearch.common.manifest import IndexParams, ModelInfo
from simsearch.common.storage import FileStore
from simsearch.common.wire import MemoryKind, ShardSearchRequest, encode_array
from simsearch.indexer.writer import write_index
from simsearch.shard.app import build_service
from simsearch.shard.collections import Collections
from simsearch.shard.exact import SCAN_LOCK
from simsearch.shard.loader import PackedPaths
from simsearch.shard.memory import (
    MemoryCollector,
    MemoryMonitor,
    WorkingSet,
    lists_bytes,
    needed_bytes,
)
from simsearch.shard.metrics import ShardMetrics
from simsearch.shard.settings import ShardSettings
from simsearch.shard.smaps import KINDS
from tests.support.procs import wait_for
from tests.unit.shard.test_smaps import CACHE, KIB, V1, block


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def smaps_text(index_rss_kb: int, index_referenced_kb: int, heap_kb: int = 3000) -> str:
    """A small smaps: a heap, an index file of the cache and its features."""
    return "".join(
        (
            block("55d0c9000000-55d0c9400000 rw-p 00000000 00:00 0 [heap]", 4096, heap_kb,
                  heap_kb, heap_kb),
            block(f"7f10e0000000-7f10e1000000 r--s 00000000 fe:00 902 "
                  f"{V1}/partitions/0000/index.faiss", 16384, index_rss_kb, 0,
                  index_referenced_kb),
            block(f"7f10f0000000-7f10f2000000 r--s 00000000 fe:00 903 "
                  f"{V1}/partitions/0000/features.h5", 32768, 2048, 0, 1024),
        )
    )  # fmt: skip


def monitor_for(
    tmp_path: Path, clock: Clock | None = None, clear_refs: Path | None = None, **settings: float
) -> tuple[MemoryMonitor, Path, Path]:
    shard_settings = ShardSettings.model_validate(
        {"store": str(tmp_path / "store"), "shard_ordinal": 0, "cache_dir": CACHE, **settings}
    )
    collections = Collections(
        FileStore(tmp_path / "store"), shard_settings, ShardMetrics(CollectorRegistry())
    )
    smaps = tmp_path / "smaps"
    smaps.write_text(smaps_text(8192, 4096))
    refs = clear_refs or tmp_path / "clear_refs"
    monitor = MemoryMonitor(shard_settings, collections, smaps, refs, clock or Clock())
    return monitor, smaps, refs


def test_the_working_set_is_the_largest_of_the_last_windows() -> None:
    working = WorkingSet(windows=3)
    assert working.current() is None and working.measured() == 0
    for codes in (100, 700, 300):
        working.record(dict.fromkeys(KINDS, 0) | {"codes": codes, "features": 10})
    assert working.current() == {"codes": 700, "features": 10, "metadata": 0, "other": 0}
    working.record(dict.fromkeys(KINDS, 0) | {"codes": 200})  # 100 leaves
    assert working.current() == {"codes": 700, "features": 10, "metadata": 0, "other": 0}
    working.record(dict.fromkeys(KINDS, 0))
    working.record(dict.fromkeys(KINDS, 0))  # 700 and 300 leave too
    assert working.current() == {"codes": 200, "features": 0, "metadata": 0, "other": 0}
    assert working.measured() == 3


def test_needed_bytes_are_anonymous_plus_slack_times_every_files_working_set() -> None:
    assert needed_bytes(1000, None) is None
    working: dict[MemoryKind, int] = {"codes": 300, "features": 20, "metadata": 5, "other": 675}
    assert needed_bytes(1000, working) == 1000 + 1400  # libraries' hot pages count too


def test_a_window_records_referenced_bytes_and_clears_the_bits(tmp_path: Path) -> None:
    monitor, smaps, refs = monitor_for(tmp_path, working_set_window_s=60, working_set_windows=5)
    memory = monitor.memory()
    assert memory is not None
    assert memory.working_set_bytes is None and memory.needed_bytes is None
    assert {k: f.working_set_bytes for k, f in memory.files.items()} == dict.fromkeys(KINDS)
    assert memory.working_set_window_s == 0
    assert monitor.begin_window() and refs.read_text() == "1"
    refs.write_text("")
    assert monitor.end_window()
    assert refs.read_text() == "1"  # the next window begins
    smaps.write_text(smaps_text(8192, 512))  # a quieter window: the first one still counts
    assert monitor.end_window()
    memory = monitor.memory()
    assert memory is not None
    assert memory.files["codes"].working_set_bytes == 4096 * KIB
    assert memory.files["features"].working_set_bytes == 1024 * KIB
    assert memory.working_set_bytes == (4096 + 1024) * KIB
    working: dict[MemoryKind, int] = {
        kind: memory.files[kind].working_set_bytes or 0 for kind in KINDS
    }
    assert memory.needed_bytes == needed_bytes(memory.anonymous_bytes, working)
    assert memory.needed_bytes is not None
    assert memory.needed_bytes >= memory.anonymous_bytes + (4096 + 1024) * KIB
    assert memory.anonymous_bytes == 3000 * KIB
    assert memory.working_set_window_s == 120  # two windows of 60 s measured


def test_clear_refs_refused_leaves_the_working_set_unmeasured(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    refused = tmp_path / "a-folder"  # writing to a folder fails like a refused write
    refused.mkdir()
    monitor, _smaps, _refs = monitor_for(tmp_path, clear_refs=refused)
    with caplog.at_level(logging.WARNING, logger="simsearch.shard.memory"):
        assert not monitor.begin_window()
        assert not monitor.end_window()
        assert not monitor.end_window()
    assert monitor.refused is not None and str(refused) in monitor.refused
    assert len([r for r in caplog.records if "working set" in r.getMessage()]) == 1
    memory = monitor.memory()
    assert memory is not None and memory.working_set_bytes is None
    assert memory.needed_bytes is None and memory.files["codes"].resident_bytes == 8192 * KIB


def test_a_reading_is_reused_for_memory_sample_s(tmp_path: Path) -> None:
    clock = Clock()
    monitor, smaps, _refs = monitor_for(tmp_path, clock, memory_sample_s=5)
    first = monitor.memory()
    assert first is not None and first.files["codes"].resident_bytes == 8192 * KIB
    smaps.write_text(smaps_text(100, 100))
    clock.now += 4.9
    cached = monitor.memory()
    assert cached is not None and cached.files["codes"].resident_bytes == 8192 * KIB
    clock.now += 0.2
    fresh = monitor.memory()
    assert fresh is not None and fresh.files["codes"].resident_bytes == 100 * KIB


def test_a_sample_age_of_0_reads_every_call(tmp_path: Path) -> None:
    monitor, smaps, _refs = monitor_for(tmp_path, memory_sample_s=0)
    assert (monitor.memory() or pytest.fail()).files["codes"].resident_bytes == 8192 * KIB
    smaps.write_text(smaps_text(100, 100))
    assert (monitor.memory() or pytest.fail()).files["codes"].resident_bytes == 100 * KIB


def test_while_an_exact_scan_holds_the_lock_the_last_reading_is_served(tmp_path: Path) -> None:
    monitor, smaps, _refs = monitor_for(tmp_path, memory_sample_s=0)
    with SCAN_LOCK:  # no reading yet: nothing to serve, and smaps is not read
        assert monitor.memory() is None
    assert monitor.memory() is not None
    smaps.write_text(smaps_text(100, 100))
    with SCAN_LOCK:
        held = monitor.memory()
    assert held is not None and held.files["codes"].resident_bytes == 8192 * KIB


def test_a_call_that_finds_the_sampler_reading_waits_for_its_reading(tmp_path: Path) -> None:
    monitor, _smaps, _refs = monitor_for(tmp_path, memory_sample_s=0)
    held, go = threading.Event(), threading.Event()

    def sampler() -> None:
        with monitor._locked():  # the sampler's hold: a reading is on its way
            held.set()
            go.wait(10)
            monitor._read()

    thread = threading.Thread(target=sampler)
    thread.start()
    assert held.wait(10)
    threading.Timer(0.05, go.set).start()  # the reading comes while the call waits
    found = monitor.memory()  # no reading existed when it was called
    thread.join(10)
    assert found is not None and found.files["codes"].resident_bytes == 8192 * KIB


def test_no_smaps_means_no_memory_figures(tmp_path: Path) -> None:
    monitor, smaps, _refs = monitor_for(tmp_path)
    smaps.unlink()
    assert monitor.memory() is None
    assert not monitor.end_window()


def test_the_sampler_thread_ends_windows_until_stopped(tmp_path: Path) -> None:
    monitor, _smaps, refs = monitor_for(tmp_path, working_set_window_s=0.05, memory_sample_s=0.02)
    monitor.start()
    try:
        wait_for(lambda: monitor.working.measured() >= 2, 10, "two working-set windows")
    finally:
        monitor.stop()
    assert refs.read_text() == "1"
    measured = monitor.working.measured()
    monitor.end_window()  # by hand: the thread no longer runs, nothing else records
    assert monitor.working.measured() == min(measured + 1, 5)


def test_the_collector_always_has_every_kind_and_the_working_set_once_measured(
    tmp_path: Path,
) -> None:
    monitor, _smaps, _refs = monitor_for(tmp_path, memory_sample_s=0)
    registry = CollectorRegistry()
    registry.register(MemoryCollector(monitor))

    def samples() -> dict[str, dict[str, float]]:
        text = generate_latest(registry).decode()
        return {
            family.name: {s.labels.get("kind", ""): s.value for s in family.samples}
            for family in text_string_to_metric_families(text)
        }

    before = samples()
    assert before["simsearch_shard_memory_anonymous_bytes"] == {"": 3000 * KIB}
    for name in ("file_bytes", "mapped_bytes"):
        assert set(before[f"simsearch_shard_memory_{name}"]) == set(KINDS)
    assert before["simsearch_shard_memory_mapped_bytes"]["metadata"] == 0
    assert before["simsearch_shard_memory_working_set_bytes"] == {}
    assert before["simsearch_shard_memory_needed_bytes"] == {}
    assert before["simsearch_shard_memory_stacks_bytes"] == {"": 0}
    assert before["simsearch_shard_memory_paths_bytes"] == {"": 0}
    assert monitor.begin_window() and monitor.end_window()
    after = samples()
    assert after["simsearch_shard_memory_working_set_bytes"]["codes"] == 4096 * KIB
    assert after["simsearch_shard_memory_needed_bytes"] == {"": (3000 + 1.4 * (4096 + 1024)) * KIB}


def test_packed_paths_know_their_size() -> None:
    paths = PackedPaths([b"img/1.jpg", b"photos/\xc3\xa9t\xc3\xa9.jpg", b""])
    assert paths.nbytes == 9 + 16 + 0 + 8 * 4  # the blob and 4 int64 offsets


def test_fast_scan_lists_count_their_blocks_and_ids() -> None:
    d, nlist, m = 16, 8, 8
    x = np.random.default_rng(0).standard_normal((1000, d)).astype(np.float32)
    ivf = faiss.IndexIVFPQ(faiss.IndexFlatL2(d), d, nlist, m, 4)
    ivf.train(x)
    ivf.add(x)
    fast = faiss.IndexIVFPQFastScan(ivf)
    size = lists_bytes(fast.invlists)
    block = 32 * m // 2  # 32 codes of m 4-bit values
    assert 1000 * (m // 2 + 8) <= size <= (1000 + 31 * nlist) * m // 2 + 8 * 1000
    assert (size - 8 * 1000) % block == 0
    flat = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
    flat.train(x)
    flat.add(x)
    assert lists_bytes(flat.invlists) == 1000 * (4 * d + 8)


def test_a_loaded_shard_reports_its_stacks_and_paths(tmp_path: Path) -> None:
    n, dim, parts = 2000, 16, 2
    x = np.random.default_rng(1).standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    params = IndexParams(
        factory=f"IVF16,PQ{dim}x4", nlist=16, pq_m=dim, nbits=4, nprobe=4, refine=10,
        train_size=n,
    )  # fmt: skip
    layout = IndexLayout(FileStore(tmp_path / "store"))
    ids, paths = np.arange(n, dtype=np.int64), [f"img/{i}.jpg" for i in range(n)]
    manifest = write_index(
        layout, ids, x, paths, ModelInfo(name="t", dim=dim), partitions=parts, params=params,
        probe_recall=False,
    )  # fmt: skip
    settings = ShardSettings(
        store=str(tmp_path / "store"), shard_ordinal=0, cache_dir=tmp_path / "cache",
        memory_sample_s=0,
    )  # fmt: skip
    service = build_service(settings, ShardMetrics(CollectorRegistry()))
    service.poller.poll_once()
    before = service.info().memory
    assert before is not None and before.stacks_bytes == 0
    assert before.paths_bytes == sum(len(p) + 8 for p in paths) + 8 * parts
    assert before.files["codes"].mapped_bytes >= sum(
        manifest.partition_files[p].index.size for p in range(parts)
    )
    assert before.files["features"].mapped_bytes > 0
    request = ShardSearchRequest(
        version=manifest.version, partitions=list(range(parts)), k=5, dim=dim, nq=1,
        vectors_b64=encode_array(x[:1], "<f4"),
    )  # fmt: skip
    asyncio.run(service.search(request))
    after = service.info().memory
    assert after is not None
    # one stack of both partitions: ≥ 8 B a code (16 4-bit values) + 8 B an id + 20 B of tables
    assert n * (8 + 8 + 20) <= after.stacks_bytes <= n * (8 + 8 + 20) + 16 * 2 * 32 * 8
    service.stop()
