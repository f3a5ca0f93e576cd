"""Partition loading: verified cache reuse, stamps, corrupt files, make-before-break.

Real indexes (write_index on a FileStore) and real files; only the clock is fake, so the
drain delays can be stepped through without sleeping.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from simsearch.common.errors import CorruptIndex
from simsearch.common.layout import IndexLayout
from simsearch.common.manifest import FileRef, Manifest, ModelInfo, verify_file
from simsearch.common.placement import partitions_for
from simsearch.common.storage import FileStore
from simsearch.indexer.writer import write_index
from simsearch.shard.loader import PartitionCache
from simsearch.shard.metrics import ShardMetrics
from simsearch.shard.versions import Holdings

P = 8
N = 2000
DIM = 32


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def publish(layout: IndexLayout, seed: int = 0, n: int = N) -> Manifest:
    """A real published version of n unit vectors (ids/paths stable across seeds)."""
    vectors = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    ids = np.arange(n, dtype=np.int64) * 7919 + 11
    paths = [f"img/{i}.jpg" for i in range(n)]
    return write_index(layout, ids, vectors, paths, ModelInfo(name="test", dim=DIM), partitions=P)


@pytest.fixture
def layout(tmp_path: Path) -> IndexLayout:
    return IndexLayout(FileStore(tmp_path / "store"))


def cache_for(layout: IndexLayout, folder: Path) -> tuple[PartitionCache, ShardMetrics]:
    metrics = ShardMetrics(CollectorRegistry())
    return PartitionCache(layout, folder, metrics), metrics


def value(metric: object) -> float:
    return float(metric._value.get())  # type: ignore[attr-defined]


def store_path(layout: IndexLayout, ref: FileRef) -> Path:
    """The file behind `ref` in a FileStore."""
    return Path(layout.store.uri.removeprefix("file://"), layout.resolve(ref))


def corrupt(layout: IndexLayout, manifest: Manifest, p: int) -> bytes:
    """Flip bytes of partition p's features.h5 in the store (same size); the old bytes."""
    path = store_path(layout, manifest.partition_files[p].features)
    original = path.read_bytes()
    damaged = bytearray(original)
    damaged[len(damaged) // 2 : len(damaged) // 2 + 64] = bytes(64)
    damaged[-16:] = b"x" * 16
    path.write_bytes(bytes(damaged))
    assert path.stat().st_size == len(original)
    return original


def test_cached_files_that_verify_are_reused(layout: IndexLayout, tmp_path: Path) -> None:
    manifest = publish(layout)
    cache, metrics = cache_for(layout, tmp_path / "cache")
    version = cache.load_template(manifest)
    served = cache.load_partition(manifest, 3, version)
    assert served.partition.index.ntotal == manifest.partition_files[3].count
    assert len(served.paths) == manifest.partition_files[3].count
    assert value(metrics.downloaded_bytes) > 0
    # a restarted shard: same folder, new process state → no download at all
    again, fresh = cache_for(layout, tmp_path / "cache")
    again.load_partition(manifest, 3, again.load_template(manifest))
    assert value(fresh.downloaded_bytes) == 0
    assert value(fresh.cache_hits) == 3  # trained.faiss, index.faiss, features.h5


def test_a_damaged_cached_copy_is_downloaded_again(layout: IndexLayout, tmp_path: Path) -> None:
    manifest = publish(layout)
    cache, _ = cache_for(layout, tmp_path / "cache")
    local = cache.fetch(manifest.partition_files[0].index)
    local.write_bytes(b"\0" * local.stat().st_size)  # bit rot on the cache volume
    again, metrics = cache_for(layout, tmp_path / "cache")
    assert again.fetch(manifest.partition_files[0].index) == local
    assert value(metrics.downloaded_bytes) == manifest.partition_files[0].index.size
    assert value(metrics.cache_hits) == 0


def test_a_store_file_with_the_wrong_sha256_is_refused_and_not_cached(
    layout: IndexLayout, tmp_path: Path
) -> None:
    manifest = publish(layout)
    original = corrupt(layout, manifest, 5)
    cache, _ = cache_for(layout, tmp_path / "cache")
    ref = manifest.partition_files[5].features
    with pytest.raises(CorruptIndex, match="sha256"):
        cache.fetch(ref)
    assert not cache.path_of(ref).exists()  # nothing left that could pass for a cached copy
    store_path(layout, ref).write_bytes(original)
    assert cache.fetch(ref).is_file()


def test_holdings_serve_the_rest_and_retry_a_corrupt_partition(
    layout: IndexLayout, tmp_path: Path
) -> None:
    manifest = publish(layout)
    original = corrupt(layout, manifest, 5)
    cache, metrics = cache_for(layout, tmp_path / "cache")
    holdings = Holdings(cache, ordinal=0, replication=1, drain_s=10, clock=Clock())
    holdings.reconcile(manifest, replicas=1)
    view = holdings.view(manifest.version)
    assert view is not None and view.settled and not view.complete
    assert sorted(view.ready) == [p for p in range(P) if p != 5]
    assert "sha256" in view.failed[5]
    holdings.reconcile(manifest, replicas=1)  # retried on every tick, still failing
    assert value(metrics.load_failures) == 2
    store_path(layout, manifest.partition_files[5].features).write_bytes(original)
    holdings.reconcile(manifest, replicas=1)
    view = holdings.view(manifest.version)
    assert view is not None and view.complete and view.failed == {}
    assert sorted(view.ready) == list(range(P))


def test_scaling_out_loads_first_and_drops_after_the_drain(
    layout: IndexLayout, tmp_path: Path
) -> None:
    manifest = publish(layout)
    clock = Clock()
    cache, _ = cache_for(layout, tmp_path / "cache")
    holdings = Holdings(cache, ordinal=0, replication=1, drain_s=10, clock=clock)
    holdings.reconcile(manifest, replicas=1)
    keep = set(partitions_for(0, P, 3))
    holdings.reconcile(manifest, replicas=3)  # two new shards: partitions move away
    view = holdings.view(manifest.version)
    assert view is not None
    assert view.assigned == keep
    assert sorted(view.ready) == list(range(P))  # still served during the drain
    clock.now += 9
    holdings.reconcile(manifest, replicas=3)
    assert len(holdings.views()[0].ready) == P
    clock.now += 2
    holdings.reconcile(manifest, replicas=3)
    assert set(holdings.views()[0].ready) == keep
    gone = min(set(range(P)) - keep)
    assert not cache.path_of(manifest.partition_files[gone].index).exists()
    assert cache.path_of(manifest.partition_files[min(keep)].index).exists()


def test_a_partition_owned_again_during_its_drain_is_kept(
    layout: IndexLayout, tmp_path: Path
) -> None:
    manifest = publish(layout)
    clock = Clock()
    cache, metrics = cache_for(layout, tmp_path / "cache")
    holdings = Holdings(cache, ordinal=0, replication=1, drain_s=10, clock=clock)
    holdings.reconcile(manifest, replicas=1)
    holdings.reconcile(manifest, replicas=3)
    clock.now += 5
    holdings.reconcile(manifest, replicas=1)  # scaled back before the drain ended
    clock.now += 60
    holdings.reconcile(manifest, replicas=1)
    assert len(holdings.views()[0].ready) == P
    assert value(metrics.downloaded_bytes) == sum(ref.size for ref in manifest.files())


def test_a_new_version_replaces_the_old_one_after_the_drain(
    layout: IndexLayout, tmp_path: Path
) -> None:
    old = publish(layout, seed=0)
    clock = Clock()
    cache, _ = cache_for(layout, tmp_path / "cache")
    holdings = Holdings(cache, ordinal=1, replication=1, drain_s=10, clock=clock)
    holdings.reconcile(old, replicas=2)
    new = publish(layout, seed=1)
    holdings.reconcile(new, replicas=2)
    assert [v.version for v in holdings.views()] == [old.version, new.version]
    assert all(v.complete for v in holdings.views())
    clock.now += 11
    holdings.reconcile(new, replicas=2)
    assert [v.version for v in holdings.views()] == [new.version]
    assert not cache.path_of(old.trained).exists()
    assert cache.path_of(new.trained).exists()


def test_at_most_two_versions_and_the_complete_one_is_kept(
    layout: IndexLayout, tmp_path: Path
) -> None:
    first = publish(layout, seed=0)
    clock = Clock()
    cache, _ = cache_for(layout, tmp_path / "cache")
    holdings = Holdings(cache, ordinal=0, replication=1, drain_s=10, clock=clock)
    holdings.reconcile(first, replicas=1)
    second = publish(layout, seed=1)
    corrupt(layout, second, 2)  # the second never completes here
    holdings.reconcile(second, replicas=1)
    third = publish(layout, seed=2)
    holdings.reconcile(third, replicas=1)
    # the second was superseded before it completed: dropped at once; first is the fallback
    # until the third is complete, then dropped after the drain
    assert [v.version for v in holdings.views()] == [first.version, third.version]
    clock.now += 11
    holdings.reconcile(third, replicas=1)
    assert [v.version for v in holdings.views()] == [third.version]


def test_a_restart_sweeps_files_it_no_longer_serves(layout: IndexLayout, tmp_path: Path) -> None:
    old = publish(layout, seed=0)
    cache, _ = cache_for(layout, tmp_path / "cache")
    Holdings(cache, ordinal=0, replication=1, drain_s=10).reconcile(old, replicas=1)
    stray = cache.root / "versions" / "junk.simsearch-tmp"
    stray.write_bytes(b"half a download")
    new = publish(layout, seed=1)
    restarted, _ = cache_for(layout, tmp_path / "cache")
    Holdings(restarted, ordinal=0, replication=1, drain_s=10).reconcile(new, replicas=2)
    files = {p.relative_to(cache.root).as_posix() for p in cache.root.rglob("*") if p.is_file()}
    expected = {new.trained.key}
    for p in partitions_for(0, P, 2):
        expected |= {new.partition_files[p].index.key, new.partition_files[p].features.key}
    assert files == expected
    stamps = {
        p.relative_to(cache.stamps).as_posix() for p in cache.stamps.rglob("*") if p.is_file()
    }
    assert stamps <= expected  # the old version's stamps went with its files


# ------------------------------------------------------------------ verification stamps


class Hashes:
    """Counts full verifications: the loader's `verify_file`, which reads the whole file."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.keys: list[str] = []

        def counting(path: Path, ref: FileRef) -> None:
            self.keys.append(ref.key)
            verify_file(path, ref)

        monkeypatch.setattr("simsearch.shard.loader.verify_file", counting)


def settle(path: Path, scratch: Path) -> None:
    """Wait until a file written now gets later timestamps than `path` (one clock tick).

    A stamp is only written once the file's timestamps are older than the stamp, so a test
    that needs a stamp lets the filesystem clock move on first (milliseconds, not seconds).
    """
    st = path.stat()
    probe = scratch / "clock-probe"
    deadline = time.monotonic() + 5
    while True:
        probe.unlink(missing_ok=True)
        probe.write_bytes(b"")
        if probe.stat().st_mtime_ns > max(st.st_mtime_ns, st.st_ctime_ns):
            break
        assert time.monotonic() < deadline, "the filesystem clock does not move"
        time.sleep(0.001)
    probe.unlink()


def warm(cache: PartitionCache, refs: list[FileRef], scratch: Path) -> None:
    """Download `refs` and leave each with a stamp (a second fetch writes one if needed)."""
    for ref in refs:
        settle(cache.fetch(ref), scratch)
        cache.fetch(ref)
        assert cache.stamp_of(ref).is_file()


def test_a_restart_trusts_stamped_files_without_hashing(
    layout: IndexLayout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = publish(layout)
    cache, _ = cache_for(layout, tmp_path / "cache")
    info = manifest.partition_files[3]
    warm(cache, [manifest.trained, info.index, info.features], tmp_path)
    assert cache.stamps == tmp_path / "cache" / ".stamps" / layout.name  # outside cache.root
    again, metrics = cache_for(layout, tmp_path / "cache")
    hashes = Hashes(monkeypatch)
    served = again.load_partition(manifest, 3, again.load_template(manifest))
    assert served.partition.index.ntotal == info.count
    assert hashes.keys == []
    assert value(metrics.cache_hits) == 3
    assert value(metrics.downloaded_bytes) == 0


@pytest.mark.parametrize("change", ["rewrite", "truncate", "replace-keeping-mtime"])
def test_a_file_changed_after_stamping_is_verified_and_downloaded_again(
    layout: IndexLayout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    manifest = publish(layout)
    ref = manifest.partition_files[0].features
    cache, _ = cache_for(layout, tmp_path / "cache")
    warm(cache, [ref], tmp_path)
    local = cache.path_of(ref)
    original, stamped = local.read_bytes(), local.stat()
    if change == "rewrite":  # same size, other bytes, in place
        local.write_bytes(bytes(len(original)))
        assert local.stat().st_mtime_ns != stamped.st_mtime_ns
    elif change == "truncate":
        local.write_bytes(original[:-1])
    else:  # another file renamed over it with the old mtime: only inode and ctime differ
        other = local.with_name("other")
        other.write_bytes(bytes(len(original)))
        os.utime(other, ns=(stamped.st_atime_ns, stamped.st_mtime_ns))
        os.replace(other, local)
        assert local.stat().st_mtime_ns == stamped.st_mtime_ns
    again, metrics = cache_for(layout, tmp_path / "cache")
    hashes = Hashes(monkeypatch)
    assert again.fetch(ref).read_bytes() == original
    assert hashes.keys == [ref.key, ref.key]  # the cached copy (fails), then the download
    assert value(metrics.downloaded_bytes) == ref.size
    assert value(metrics.cache_hits) == 0


def test_a_stamp_for_another_sha256_is_ignored(
    layout: IndexLayout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = publish(layout)
    ref = manifest.partition_files[0].index
    cache, _ = cache_for(layout, tmp_path / "cache")
    warm(cache, [ref], tmp_path)
    # the manifest now says other bytes for the same key (and size): the stamp is stale
    new = bytes(ref.size)
    store_path(layout, ref).write_bytes(new)
    changed = FileRef(key=ref.key, size=ref.size, sha256=hashlib.sha256(new).hexdigest())
    again, metrics = cache_for(layout, tmp_path / "cache")
    hashes = Hashes(monkeypatch)
    assert again.fetch(changed).read_bytes() == new
    assert hashes.keys == [ref.key, ref.key]
    assert value(metrics.downloaded_bytes) == ref.size
    stamp = json.loads(again.stamp_of(ref).read_bytes())  # if one was written: the new sha
    assert stamp["sha256"] == changed.sha256


@pytest.mark.parametrize(
    "body",
    [b"", b"{not json", b"\xff\xfe", b"[]", b'{"format": 1}', b"null"],
    ids=["empty", "not-json", "not-utf8", "list", "partial", "null"],
)
def test_a_corrupt_stamp_means_a_full_verification(
    layout: IndexLayout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: bytes
) -> None:
    manifest = publish(layout)
    ref = manifest.trained
    cache, _ = cache_for(layout, tmp_path / "cache")
    warm(cache, [ref], tmp_path)
    cache.stamp_of(ref).write_bytes(body)
    again, metrics = cache_for(layout, tmp_path / "cache")
    hashes = Hashes(monkeypatch)
    again.fetch(ref)
    assert hashes.keys == [ref.key]
    assert value(metrics.cache_hits) == 1
    assert value(metrics.downloaded_bytes) == 0
    assert json.loads(again.stamp_of(ref).read_bytes())["sha256"] == ref.sha256  # re-stamped
    again.fetch(ref)
    assert hashes.keys == [ref.key]


def test_a_stamp_with_another_stat_means_a_full_verification(
    layout: IndexLayout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = publish(layout)
    ref = manifest.trained
    cache, _ = cache_for(layout, tmp_path / "cache")
    warm(cache, [ref], tmp_path)
    stamp = json.loads(cache.stamp_of(ref).read_bytes())
    stamp["stat"][3] += 1  # another inode: the file was replaced since
    cache.stamp_of(ref).write_text(json.dumps(stamp))
    hashes = Hashes(monkeypatch)
    cache.fetch(ref)
    assert hashes.keys == [ref.key]


def test_a_file_with_timestamps_not_older_than_the_check_is_not_stamped(
    layout: IndexLayout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write in the same clock tick as the check would leave the timestamps unchanged."""
    manifest = publish(layout)
    ref = manifest.trained
    cache, _ = cache_for(layout, tmp_path / "cache")
    local = cache.fetch(ref)
    future = time.time_ns() + 3600 * 10**9
    os.utime(local, ns=(future, future))
    hashes = Hashes(monkeypatch)
    cache.fetch(ref)
    cache.fetch(ref)
    assert hashes.keys == [ref.key, ref.key]
    assert not cache.stamp_of(ref).exists()


def test_sweep_keeps_stamps_of_kept_files_and_removes_the_rest(
    layout: IndexLayout, tmp_path: Path
) -> None:
    manifest = publish(layout)
    kept, dropped = manifest.partition_files[0].index, manifest.partition_files[1].index
    cache, _ = cache_for(layout, tmp_path / "cache")
    warm(cache, [kept, dropped], tmp_path)
    half_written = cache.stamp_of(kept).with_name("index.faiss.0a1b2c.tmp")
    half_written.write_text("{")
    orphan = cache.stamps / "versions" / "v20200101T000000Z-000000" / "trained.faiss"
    orphan.parent.mkdir(parents=True)
    orphan.write_text("{}")
    assert cache.sweep({kept.key}) == 1  # cache files only: dropped's index.faiss
    stamps = {p for p in cache.stamps.rglob("*") if p.is_file()}
    assert stamps == {cache.stamp_of(kept)}
    assert not cache.stamp_of(dropped).parent.exists()  # empty folders pruned
    assert not orphan.parent.exists()
    assert cache.fetch(kept) == cache.path_of(kept)


def test_discard_removes_the_stamp(layout: IndexLayout, tmp_path: Path) -> None:
    manifest = publish(layout)
    gone, used = manifest.partition_files[2].index, manifest.partition_files[2].features
    cache, _ = cache_for(layout, tmp_path / "cache")
    warm(cache, [gone, used], tmp_path)
    cache.discard([gone, used], keep={used.key})
    assert not cache.path_of(gone).exists()
    assert not cache.stamp_of(gone).exists()
    assert cache.path_of(used).is_file()
    assert cache.stamp_of(used).is_file()
    cache.discard([used], keep=set())
    assert not any(cache.stamps.rglob("*"))  # empty folders pruned


def test_a_shard_scaled_away_keeps_serving_and_loads_nothing_new(
    layout: IndexLayout, tmp_path: Path
) -> None:
    # Until the controller (or `simsearch scale`) stops it, a shard beyond the count keeps
    # what it holds: dropping at once would open a gap before the survivors load it.
    manifest = publish(layout)
    clock = Clock()
    cache, metrics = cache_for(layout, tmp_path / "cache")
    holdings = Holdings(cache, ordinal=1, replication=1, drain_s=10, clock=clock)
    holdings.reconcile(manifest, replicas=2)
    mine = set(partitions_for(1, P, 2))
    assert set(holdings.views()[0].ready) == mine
    downloaded = value(metrics.downloaded_bytes)
    holdings.reconcile(manifest, replicas=1)
    clock.now += 60
    holdings.reconcile(manifest, replicas=1)
    view = holdings.views()[0]
    assert set(view.ready) == mine and view.assigned == mine and not view.loading
    assert value(metrics.downloaded_bytes) == downloaded


def test_a_rollback_keeps_the_version_rolled_back_from_for_the_drain(
    layout: IndexLayout, tmp_path: Path
) -> None:
    # The router may still plan on the newer version until its next poll of /info.
    old = publish(layout, seed=0)
    clock = Clock()
    cache, _ = cache_for(layout, tmp_path / "cache")
    holdings = Holdings(cache, ordinal=0, replication=1, drain_s=10, clock=clock)
    holdings.reconcile(old, replicas=1)
    clock.now += 100
    new = publish(layout, seed=1)
    holdings.reconcile(new, replicas=1)
    clock.now += 5  # the old one is still kept as the fallback
    holdings.reconcile(old, replicas=1)  # CURRENT rolled back
    assert [v.version for v in holdings.views()] == [old.version, new.version]
    clock.now += 11
    holdings.reconcile(old, replicas=1)
    assert [v.version for v in holdings.views()] == [old.version]


def test_a_store_outage_leaves_partitions_loading_not_failed(
    layout: IndexLayout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unreachable store is waited out: what is not loaded stays `loading`, the reason
    is kept in `store_error`, and the next tick after the store returns completes it."""
    from simsearch.common.errors import StorageError

    manifest = publish(layout)
    cache, _ = cache_for(layout, tmp_path / "cache")
    holdings = Holdings(cache, ordinal=0, replication=1, drain_s=10, clock=Clock())
    real = cache.load_partition
    calls: list[int] = []

    def flaky(m: Manifest, number: int, version: object) -> object:
        calls.append(number)
        if number >= 2:
            raise StorageError("cannot reach S3 endpoint http://s3:9000")
        return real(m, number, version)  # type: ignore[arg-type]

    monkeypatch.setattr(cache, "load_partition", flaky)
    holdings.reconcile(manifest, replicas=1)
    view = holdings.view(manifest.version)
    assert view is not None and sorted(view.ready) == [0, 1] and view.failed == {}
    assert sorted(view.loading) == list(range(2, P))
    assert holdings.store_error is not None and "http://s3:9000" in holdings.store_error
    assert calls == [0, 1, 2]  # the pass stops at the first outage: no storm of retries
    monkeypatch.setattr(cache, "load_partition", real)
    holdings.reconcile(manifest, replicas=1)
    view = holdings.view(manifest.version)
    assert view is not None and view.complete and holdings.store_error is None
