"""The fault matrix (issue #12): one real fault at a time, under a steady query load.

Every test runs real processes on loopback — shards, router, embedder (random weights),
a moto S3 server behind a TCP proxy that plays the outage (`tests/support/tcpproxy.py`) —
keeps `simsearch.local.loadgen.QueryLoad` running across the fault, and checks *every*
answer: sent, failed (non-200), flagged partial, and **wrong**: a 200 whose ids are not
the exact top-k of some set of `partitions_answered` partitions (brute force over the
test's own vectors, see `wrong_answers`). The index plan is exact (IVF1,Flat below
50 000 vectors), so any difference is a bug, never approximation.

With `SIMSEARCH_FAULT_REPORT=path.json` the figures of each fault are written there (one
JSON object keyed by fault), which is what docs/reliability.md quotes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import httpx
import numpy as np
import pytest

from simsearch.common.ids import key_ids
from simsearch.common.layout import IndexLayout
from simsearch.common.manifest import ModelInfo
from simsearch.common.placement import partitions_for
from simsearch.common.storage import S3Options, open_store
from simsearch.indexer.writer import write_index
from simsearch.local.loadgen import QueryLoad, Sample, recovery_times, summarise
from tests.support import procs
from tests.support.cluster import spawn
from tests.support.paths import SAMPLE_IMAGES
from tests.support.procs import Service, wait_ready
from tests.support.s3server import AWS, s3_client, stop_process
from tests.support.tcpproxy import TcpProxy
from tests.support.truth import is_exact

pytestmark = pytest.mark.integration

DIM, N, P, K = 64, 3000, 8, 10
RATE = 25.0  # queries per second: modest, the machine has two shared cores
REPORT: dict[str, dict[str, object]] = {}


# ---- the data and the truth


@dataclass
class Dataset:
    """Unit vectors with their ids, as indexed; the truth every answer is checked against."""

    ids: np.ndarray
    vectors: np.ndarray
    paths: list[str]

    def ranked(self, query: np.ndarray) -> np.ndarray:
        """Every id, best first (brute force, cosine)."""
        q = query / np.linalg.norm(query)
        ranked: np.ndarray = self.ids[np.argsort(-(self.vectors @ q))]
        return ranked


def dataset(n: int = N, dim: int = DIM, seed: int = 0, prefix: str = "img") -> Dataset:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    paths = [f"{prefix}/{i:05d}.jpg" for i in range(n)]
    return Dataset(key_ids(paths), x, paths)


def wrong_answers(
    samples: Sequence[Sample], queries: np.ndarray, truth: dict[str, Dataset]
) -> list[Sample]:
    """The 200s that are not an exact top-k of the partitions they claim (truth by version)."""
    ranked: dict[tuple[str, int], np.ndarray] = {}
    wrong = []
    for s in samples:
        if not s.ok:
            continue
        key = (s.version, s.query)
        if key not in ranked:
            ranked[key] = truth[s.version].ranked(queries[s.query])
        if not is_exact(ranked[key], s.ids, round(s.coverage * P), P, K):
            wrong.append(s)
    return wrong


def figures(
    name: str,
    samples: Sequence[Sample],
    queries: np.ndarray,
    truth: dict[str, Dataset],
    recovery_s: float | None,
    **extra: object,
) -> dict[str, object]:
    """The fault's figures (printed, and kept for SIMSEARCH_FAULT_REPORT)."""
    summary = summarise(samples)
    out: dict[str, object] = {
        "sent": summary.sent,
        "failed": summary.failed,
        "failed_connection": sum(1 for s in samples if s.status == 0),
        "partial": summary.partial_flagged,
        "partial_unflagged": summary.partial_unflagged,
        "wrong": len(wrong_answers(samples, queries, truth)),
        "recovery_s": recovery_s,
        "p50_ms": summary.p50_ms,
        "p99_ms": summary.p99_ms,
        "errors": summary.errors,
        **extra,
    }
    REPORT[name] = out
    print(name, json.dumps(out))
    target = os.environ.get("SIMSEARCH_FAULT_REPORT")
    if target:
        old = json.loads(Path(target).read_text()) if Path(target).is_file() else {}
        Path(target).write_text(json.dumps({**old, name: out}, indent=2) + "\n")
    return out


# ---- processes


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> float:
    """`procs.wait_for`, a service that does not answer yet counting as "not yet"."""
    return procs.wait_for(check, timeout_s, what, ignore=(httpx.HTTPError,))


def get(url: str) -> dict[str, object]:
    data: dict[str, object] = httpx.get(url, timeout=5).json()
    return data


def shard_version(shard: Service) -> dict[str, object]:
    """The live version's entry of a shard's /info (ready, loading, failed)."""
    versions = get(f"{shard.url}/info")["versions"]
    assert isinstance(versions, list)
    live = [v for v in versions if v["live"]] or versions
    return dict(live[-1]) if live else {}


def failed_partitions(shard: Service) -> dict[str, object]:
    """The live version's failed partitions of a shard: partition (as text) → the reason."""
    failed = shard_version(shard)["failed"]
    assert isinstance(failed, dict), failed
    return failed


@dataclass
class Cluster:
    """Shards and a router over one store; everything started is stopped at the end."""

    store: str
    s3_url: str
    tmp: Path
    shards: list[Service] = field(default_factory=list)
    routers: list[Service] = field(default_factory=list)
    others: list[Service] = field(default_factory=list)

    def shard_env(self, ordinal: int, count: int, replication: int, cache: Path) -> dict[str, str]:
        return {
            "SIMSEARCH_STORE": self.store,
            "SIMSEARCH_S3_ENDPOINT_URL": self.s3_url,
            "SIMSEARCH_S3_MAX_ATTEMPTS": "2",
            "SIMSEARCH_S3_CONNECT_TIMEOUT_S": "1",
            "SIMSEARCH_S3_READ_TIMEOUT_S": "5",
            "SIMSEARCH_SHARD_ORDINAL": str(ordinal),
            "SIMSEARCH_REPLICAS": str(count),
            "SIMSEARCH_REPLICATION": str(replication),
            "SIMSEARCH_POLL_S": "1",
            "SIMSEARCH_SEARCH_WORKERS": "2",
            "SIMSEARCH_FAISS_THREADS": "1",
            "SIMSEARCH_CACHE_DIR": str(cache),
        }

    def start_shards(self, count: int, replication: int, tag: str = "a") -> list[Service]:
        shards = [
            spawn("shard", self.shard_env(o, count, replication, self.tmp / f"cache-{tag}{o}"))
            for o in range(count)
        ]
        self.shards += shards
        return shards

    def start_router(self, shards: list[Service], **extra: str) -> Service:
        env = {
            "SIMSEARCH_SHARDS": ",".join(s.url for s in shards),
            "SIMSEARCH_STORE": self.store,
            "SIMSEARCH_S3_ENDPOINT_URL": self.s3_url,
            "SIMSEARCH_POLL_S": "0.5",
            "SIMSEARCH_TIMEOUT_MS": "2000",
            **extra,
        }
        router = spawn("router", env)
        self.routers.append(router)
        wait_ready(router, "/health/ready", 30)
        return router

    def stop(self) -> None:
        for service in [*self.routers, *self.shards, *self.others]:
            if service.process.poll() is None:
                service.process.send_signal(signal.SIGCONT)
            stop_process(service.process)


def bucket(s3_endpoint: str, name: str) -> None:
    s3_client(s3_endpoint).create_bucket(Bucket=name)


def publish(store: str, s3_url: str, data: Dataset, partitions: int = P) -> str:
    """Write `data` as a new version of the index with the indexer's own writer."""
    layout = IndexLayout(open_store(store, S3Options(endpoint_url=s3_url)))
    base = layout.load_manifest(v) if (v := layout.current()) else None
    manifest = write_index(
        layout, data.ids, data.vectors, data.paths, ModelInfo(name="efficientnet-lite0",
        dim=data.vectors.shape[1]), partitions=partitions, base=base, probe_recall=False,
    )  # fmt: skip
    return manifest.version


def current(store: str, s3_url: str) -> str | None:
    return IndexLayout(open_store(store, S3Options(endpoint_url=s3_url))).current()


@pytest.fixture
def env(
    s3_endpoint: str, s3_env: None, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Cluster]:
    """A fresh bucket, a proxy in front of moto (the S3 the services see) and a cluster."""
    name = request.node.name.replace("_", "-")[:40].strip("-").lower()
    bucket(s3_endpoint, name)
    proxy = TcpProxy(s3_endpoint)
    proxy.start()
    cluster = Cluster(f"s3://{name}/idx", proxy.url, tmp_path)
    cluster.proxy = proxy  # type: ignore[attr-defined]
    try:
        yield cluster
    finally:
        cluster.stop()
        proxy.stop()


def proxy_of(cluster: Cluster) -> TcpProxy:
    proxy: TcpProxy = cluster.proxy  # type: ignore[attr-defined]
    return proxy


def full(router: Service) -> bool:
    health = get(f"{router.url}/health")
    return health["coverage"] == 1.0 and health["index_version"] is not None


def queries_of(data: Dataset, n: int = 60, seed: int = 1) -> np.ndarray:
    q: np.ndarray = np.random.default_rng(seed).standard_normal((n, data.vectors.shape[1]))
    return q.astype(np.float32)


# ---- 1. S3 stopped while shards load


def test_s3_stopped_during_shard_loading_serves_what_is_held_then_recovers(
    env: Cluster,
) -> None:
    data = dataset()
    version = publish(env.store, env.s3_url, data)
    proxy = proxy_of(env)
    proxy.stop()
    proxy.start(die_after_bytes=1_000_000)  # the store dies part-way through the downloads
    shards = env.start_shards(2, 1)
    wait_for(lambda: not proxy.running(), 30, "the store to go down mid-load")
    wait_for(lambda: any(shard_version(s).get("ready") for s in shards), 30, "some partitions")
    wait_for(lambda: all(get(f"{s.url}/info")["error"] for s in shards), 10, "the outage seen")
    held = [shard_version(s) for s in shards]
    errors = [str(get(f"{s.url}/info")["error"]) for s in shards]
    # what is not ready is reported loading (the store is waited out), never failed
    assert all(h["failed"] == {} for h in held), held
    assert any(h["loading"] for h in held), held
    assert all(proxy.url in e for e in errors), errors
    router = env.start_router(shards)
    q = queries_of(data)
    with QueryLoad(router.url, q, RATE) as load:
        time.sleep(2.0)
        back = load.now()
        proxy.start()  # S3 returns on the same port
        wait_for(lambda: full(router), 30, "full coverage after S3 returned")
        time.sleep(1.0)
    samples = load.stop()
    assert all(s.ok for s in samples), summarise(samples).errors
    assert any(s.partial for s in samples if s.sent < back)
    [recovered] = recovery_times(samples, [back])
    out = figures(
        "s3_down_during_load", samples, q, {version: data}, recovered,
        held=[{k: h[k] for k in ("ready", "loading", "failed")} for h in held],
        shard_error=errors[0],
    )  # fmt: skip
    assert out["wrong"] == 0 and out["failed"] == 0 and out["partial_unflagged"] == 0
    assert recovered <= 10.0
    assert all(s.process.poll() is None for s in shards)


# ---- 2. S3 stopped during an index build


def write_h5(path: Path, data: Dataset) -> None:
    with h5py.File(path, "w") as h5:
        h5["features"] = data.vectors
        h5["paths"] = np.array(data.paths, dtype=object).astype("S")


def run_import(cluster: Cluster, h5: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **AWS, "SIMSEARCH_S3_ENDPOINT_URL": cluster.s3_url}
    env |= {"SIMSEARCH_S3_MAX_ATTEMPTS": "2", "SIMSEARCH_S3_CONNECT_TIMEOUT_S": "1"}
    return subprocess.run(
        [sys.executable, "-m", "simsearch.cli", "index", "import-h5", str(h5),
         "--store", cluster.store, "--partitions", str(P), "--model", "efficientnet-lite0"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_s3_stopped_during_a_build_publishes_nothing_and_a_rerun_finishes(env: Cluster) -> None:
    old = dataset()
    version = publish(env.store, env.s3_url, old)
    shards = env.start_shards(2, 1)
    for shard in shards:
        wait_ready(shard, "/health/ready", 60)
    router = env.start_router(shards)
    new = dataset(n=N + 300, seed=0)  # the same 3000 images (same vectors) and 300 more
    h5 = env.tmp / "features.h5"
    write_h5(h5, new)
    proxy = proxy_of(env)
    q = queries_of(old)
    with QueryLoad(router.url, q, RATE) as load:
        time.sleep(1.0)
        proxy.stop()
        proxy.start(die_after_bytes=600_000)  # dies while the partitions are uploaded
        failed = run_import(env, h5)
        outage_over = load.now()
        proxy.stop()
        proxy.start()
        assert current(env.store, env.s3_url) == version  # no half version became visible
        time.sleep(1.0)
        rerun = run_import(env, h5)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        newer = json.loads(rerun.stdout)["version"]
        wait_for(lambda: get(f"{router.url}/health")["index_version"] == newer, 30, "the flip")
        time.sleep(1.0)
    samples = load.stop()
    assert failed.returncode == 1, (failed.returncode, failed.stderr[-3000:])
    assert "Traceback" not in failed.stderr, failed.stderr[-3000:]
    message = failed.stderr.strip().splitlines()[-1]
    assert message.startswith("simsearch: ") and env.s3_url in message, message
    assert all(s.version == version for s in samples if s.ok and s.sent < outage_over)
    out = figures(
        "s3_down_during_build", samples, q, {version: old, newer: new}, 0.0,
        build_error=message, versions=summarise(samples).versions,
    )  # fmt: skip
    assert out["wrong"] == 0 and out["failed"] == 0 and out["partial"] == 0


# ---- 3. the embedder killed


def test_a_killed_embedder_costs_image_search_only_and_recovers(env: Cluster) -> None:
    data = dataset(n=1500, dim=1280, seed=2)
    version = publish(env.store, env.s3_url, data)
    embedder_env = {"SIMSEARCH_WEIGHTS": "random", "SIMSEARCH_TORCH_THREADS": "1"}
    embedder = spawn("embedder", embedder_env)
    env.others.append(embedder)
    shards = env.start_shards(2, 1)
    for shard in shards:
        wait_ready(shard, "/health/ready", 60)
    router = env.start_router(shards, SIMSEARCH_EMBEDDER_URL=embedder.url)
    wait_ready(embedder, "/health/ready", 120)
    photo = sorted(SAMPLE_IMAGES.glob("*/*.jpg"))[0].read_bytes()

    def image_search() -> httpx.Response:
        files = {"file": ("p.jpg", photo, "image/jpeg")}
        return httpx.post(f"{router.url}/search/image", params={"k": 3}, files=files, timeout=30)

    assert image_search().status_code == 200
    q = queries_of(data)
    with QueryLoad(router.url, q, RATE) as load:
        time.sleep(1.0)
        embedder.process.kill()
        embedder.process.wait(5)
        refused = image_search()
        health = get(f"{router.url}/health")
        wait_for(lambda: not get(f"{router.url}/health")["embedder"], 10, "embedder: false")
        health = get(f"{router.url}/health")
        port = int(embedder.url.rsplit(":", 1)[1])
        embedder = spawn("embedder", embedder_env, port)
        env.others.append(embedder)
        wait_ready(embedder, "/health/ready", 120)
        back = time.monotonic()
        wait_for(lambda: image_search().status_code == 200, 5, "image search after restart")
        wait_for(lambda: get(f"{router.url}/health")["embedder"] is True, 5, "embedder: true")
        recovered = time.monotonic() - back
    samples = load.stop()
    assert refused.status_code == 503, refused.text
    assert refused.json()["detail"], refused.text
    assert health["status"] == "degraded" and health["embedder"] is False
    assert health["embedder_error"], health
    out = figures(
        "embedder_killed", samples, q, {version: data}, round(recovered, 2),
        image_status=refused.status_code, image_detail=refused.json()["detail"],
        embedder_error=health["embedder_error"],
    )  # fmt: skip
    assert out["wrong"] == 0 and out["failed"] == 0 and out["partial"] == 0
    assert recovered <= 5.0


# ---- 4. a corrupt partition in the store


def corrupt(cluster: Cluster, s3_endpoint: str, partition: int) -> str:
    """Overwrite the live version's features object of `partition` with garbage of the same
    size (so only the sha256 can tell: the size check alone would not)."""
    layout = IndexLayout(open_store(cluster.store, S3Options(endpoint_url=s3_endpoint)))
    live = layout.current()
    assert live is not None
    ref = layout.load_manifest(live).partition_files[partition].features
    garbage = np.random.default_rng(9).bytes(ref.size)
    layout.store.put(layout.resolve(ref), garbage)
    return ref.key


def test_a_corrupt_partition_is_failed_served_by_its_other_holder_or_flagged(
    env: Cluster, s3_endpoint: str
) -> None:
    data = dataset()
    version = publish(env.store, env.s3_url, data)
    victim = 3
    shards = env.start_shards(3, 2, tag="r2-")
    for shard in shards:
        wait_ready(shard, "/health/ready", 60)
    router2 = env.start_router(shards)
    wait_for(lambda: full(router2), 20, "R=2 full coverage")
    corrupt(env, s3_endpoint, victim)
    # a holder of the victim restarts with an empty cache: it must fetch the corrupt object
    holder = next(o for o in range(3) if victim in partitions_for(o, P, 3, 2))
    port = int(shards[holder].url.rsplit(":", 1)[1])
    stop_process(shards[holder].process)
    cache = env.tmp / f"cache-r2-fresh{holder}"
    shards[holder] = spawn("shard", env.shard_env(holder, 3, 2, cache), port)
    env.shards.append(shards[holder])
    wait_ready(shards[holder], "/health/ready", 60)
    wait_for(lambda: str(victim) in failed_partitions(shards[holder]), 20, "failed")
    reason = failed_partitions(shards[holder])[str(victim)]
    q = queries_of(data)
    with QueryLoad(router2.url, q, RATE) as load:
        time.sleep(3.0)
    r2 = load.stop()
    # R = 1: the only holder fails it, answers are flagged partial
    single = env.start_shards(2, 1, tag="r1-")
    for shard in single:
        wait_ready(shard, "/health/ready", 60)
    router1 = env.start_router(single)
    only = next(s for o, s in enumerate(single) if victim in partitions_for(o, P, 2, 1))
    wait_for(lambda: str(victim) in failed_partitions(only), 20, "failed (R=1)")
    with QueryLoad(router1.url, q, RATE) as load:
        time.sleep(3.0)
    r1 = load.stop()
    truth = {version: data}
    out2 = figures("corrupt_partition_r2", r2, q, truth, None, failed_reason=reason)
    out1 = figures("corrupt_partition_r1", r1, q, truth, None)
    assert "does not match the manifest" in str(reason) and "sha256" in str(reason), reason
    assert out2["wrong"] == 0 and out2["failed"] == 0 and out2["partial"] == 0
    assert out1["wrong"] == 0 and out1["failed"] == 0 and out1["partial_unflagged"] == 0
    assert out1["partial"] == out1["sent"]
    assert all(s.coverage == (P - 1) / P for s in r1)


# ---- 5. a full cache disk


def test_a_full_cache_disk_fails_what_does_not_fit_and_serves_the_rest(env: Cluster) -> None:
    data = dataset()
    version = publish(env.store, env.s3_url, data)
    cache = env.tmp / "cache-small"
    cache.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(cache)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if mounted.returncode != 0:  # only root may mount: there is no honest ENOSPC otherwise
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    small = spawn("shard", env.shard_env(0, 2, 1, cache))
    try:
        other = spawn("shard", env.shard_env(1, 2, 1, env.tmp / "cache-big"))
        env.shards += [other]
        for shard in (small, other):
            wait_ready(shard, "/health/ready", 60)
        wait_for(lambda: shard_version(small)["failed"] != {}, 20, "a failed partition")
        router = env.start_router([small, other])
        q = queries_of(data)
        with QueryLoad(router.url, q, RATE) as load:
            time.sleep(4.0)  # several poll ticks: retries must not crash the process
        samples = load.stop()
        held = shard_version(small)
        assert small.process.poll() is None, small.log()[-3000:]
    finally:
        stop_process(small.process)  # before the unmount: it holds files there open
        subprocess.run(["umount", "-l", str(cache)], check=False)
    reasons = set(held["failed"].values())  # type: ignore[attr-defined]
    out = figures(
        "full_cache_disk", samples, q, {version: data}, None,
        ready=held["ready"], failed_reasons=sorted(reasons),
    )  # fmt: skip
    assert held["ready"], held
    assert all("No space left" in r or "ENOSPC" in r for r in reasons), reasons
    assert "No space left" in small.log() or "ENOSPC" in small.log()
    assert out["wrong"] == 0 and out["failed"] == 0 and out["partial_unflagged"] == 0


# ---- 6. the router killed and restarted


def test_a_router_killed_under_load_fails_only_in_flight_requests_as_connection_errors(
    env: Cluster,
) -> None:
    data = dataset()
    version = publish(env.store, env.s3_url, data)
    shards = env.start_shards(2, 1)
    for shard in shards:
        wait_ready(shard, "/health/ready", 60)
    router = env.start_router(shards)
    port = int(router.url.rsplit(":", 1)[1])
    q = queries_of(data)
    with QueryLoad(router.url, q, RATE) as load:
        time.sleep(1.5)
        killed = load.now()
        router.process.send_signal(signal.SIGKILL)
        router.process.wait(5)
        router = spawn("router", {**_router_env(env, shards)}, port)
        env.routers.append(router)
        wait_ready(router, "/health/ready", 30)
        ready = load.now()
        time.sleep(2.0)
    samples = load.stop()
    bad = [s for s in samples if not s.ok]
    assert all(s.status == 0 for s in bad), {s.status for s in bad}
    assert all(killed - 0.5 <= s.sent <= ready + 0.5 for s in bad)
    after = [s for s in samples if s.sent > ready + 0.5]
    assert after and all(s.ok and s.coverage == 1.0 for s in after)
    [recovered] = recovery_times(samples, [killed])
    out = figures(
        "router_killed", samples, q, {version: data}, recovered,
        restart_s=round(ready - killed, 2),
    )  # fmt: skip
    assert out["wrong"] == 0 and out["partial"] == 0


def _router_env(cluster: Cluster, shards: list[Service]) -> dict[str, str]:
    return {
        "SIMSEARCH_SHARDS": ",".join(s.url for s in shards),
        "SIMSEARCH_STORE": cluster.store,
        "SIMSEARCH_S3_ENDPOINT_URL": cluster.s3_url,
        "SIMSEARCH_POLL_S": "0.5",
        "SIMSEARCH_TIMEOUT_MS": "2000",
    }


# ---- 7. a slow (SIGSTOPped) shard


def test_a_stopped_shard_with_hedging_fails_nothing_and_bounds_p99(env: Cluster) -> None:
    data = dataset()
    version = publish(env.store, env.s3_url, data)
    shards = env.start_shards(2, 2)
    for shard in shards:
        wait_ready(shard, "/health/ready", 60)
    hedged = env.start_router(shards, SIMSEARCH_HEDGE_PERCENTILE="90", SIMSEARCH_HEDGE_MIN_MS="20")
    plain = env.start_router(shards)
    q = queries_of(data)
    for router in (hedged, plain):
        with QueryLoad(router.url, q, RATE):
            time.sleep(1.0)  # warm: the hedge learns the shards' answer times
    shards[1].process.send_signal(signal.SIGSTOP)
    try:  # both loads at once: each router meets the frozen shard before it polls it down
        with QueryLoad(hedged.url, q, RATE) as on_load, QueryLoad(plain.url, q, RATE) as off_load:
            time.sleep(3.0)
        results = {"hedged": on_load.stop(), "plain": off_load.stop()}
    finally:
        shards[1].process.send_signal(signal.SIGCONT)
    truth = {version: data}
    off = figures("slow_shard_hedging_off", results["plain"], q, truth, None)
    on = figures(
        "slow_shard_hedging_on", results["hedged"], q, truth, None, p99_off_ms=off["p99_ms"]
    )
    assert on["failed"] == 0 and on["wrong"] == 0 and on["partial"] == 0, on
    assert float(on["p99_ms"]) < 1000.0, on  # type: ignore[arg-type]
    assert off["wrong"] == 0
