"""The live recall monitor and the shards' memory accounting, measured on a real cluster.

Runs on an index that `search_bench.py --save-vectors` built in WORKDIR (store/,
base.npy, queries.npy); starts shard and router processes on loopback.

    # 1. convergence: the recall gauge against an offline exact measurement of the same
    #    queries, then a lower nprobe showing in the gauge within one window
    python scripts/bench/monitor_bench.py recall --workdir /tmp/mb100k \
        --out docs/bench/recall_monitor_100k.json
    # 2. cost: foreground p50/p99 at concurrency 8, monitor off (fraction 0) and on (1 %),
    #    alternating rounds on the same shards
    python scripts/bench/monitor_bench.py ab --workdir /tmp/mb100k --rounds 4 \
        --out docs/bench/recall_monitor_ab_100k.json
    # 3. sizing: one shard holding every partition inside a memory cgroup (v1) at several
    #    limits: p99 against the fully cached p99, and the shard's own `needed_bytes`
    python scripts/bench/monitor_bench.py memory --workdir /tmp/mb100k \
        --out docs/bench/memory_sizing_100k.json

The offline truth is computed here, not by the code under test: the queries projected
into the index's scoring space with its template, brute force over every stored vector
(as stored: float16 rounding included), and the cluster's own answers scored with the
same tie rule (a hit counts when its score reaches the exact k-th score).
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_bench import scoring_space, spawn, wait_ready

from simsearch.common.ann import Template
from simsearch.common.layout import IndexLayout
from simsearch.common.storage import open_store

K = 10
TIE_TOL = 1e-5
CGROUP = Path("/sys/fs/cgroup/memory")


# --- the cluster ------------------------------------------------------------------------


class Cluster:
    """Shard processes (kept for the whole run) and a router that can be restarted."""

    def __init__(self, workdir: Path, shards: int, port: int, shard_env: dict[str, str]):
        self.workdir, self.port = workdir, port
        self.logs = workdir / "logs-monitor"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.shard_ports = [port + 1 + s for s in range(shards)]
        self.shards = [
            spawn(
                "shard",
                p,
                {
                    "SIMSEARCH_STORE": str(workdir / "store"),
                    "SIMSEARCH_SHARD_ORDINAL": str(s),
                    "SIMSEARCH_REPLICAS": str(shards),
                    "SIMSEARCH_CACHE_DIR": str(workdir / f"cache-{s}"),
                    **shard_env,
                },
                self.logs / f"shard-{s}.log",
            )
            for s, p in enumerate(self.shard_ports)
        ]
        for p in self.shard_ports:
            wait_ready(p)
        self.router: Any = None

    def start_router(self, env: dict[str, str]) -> None:
        self.stop_router()
        self.router = spawn(
            "router",
            self.port,
            {
                "SIMSEARCH_SHARDS": ",".join(f"http://127.0.0.1:{p}" for p in self.shard_ports),
                "SIMSEARCH_TIMEOUT_MS": "30000",
                **env,
            },
            self.logs / "router.log",
        )
        wait_ready(self.port)

    def stop_router(self) -> None:
        if self.router is not None:
            self.router.terminate()
            self.router.wait(timeout=30)
            self.router = None

    def close(self) -> None:
        self.stop_router()
        for proc in self.shards:
            proc.terminate()
            proc.wait(timeout=30)


def get(port: int, path: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path)
    return conn.getresponse().read()


def scrape(port: int, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample of metric family `name` on `port`'s /metrics, by its labels."""
    out: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(get(port, "/metrics").decode()):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def gauge(port: int, name: str) -> float | None:
    """The one (unlabelled, or single-series) value of a gauge, None when absent."""
    values = [v for labels, v in scrape(port, name).items() if dict(labels).get("service") != ""]
    return values[0] if values else None


def post(conn: http.client.HTTPConnection, body: bytes) -> dict[str, Any]:
    conn.request("POST", "/search/vector", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    data: dict[str, Any] = json.loads(response.read())
    if response.status != 200:
        raise RuntimeError(data)
    return data


def bodies(q: np.ndarray, nprobe: int | None = None) -> list[bytes]:
    extra = {"nprobe": nprobe} if nprobe else {}
    return [json.dumps({"vector": v.tolist(), "k": K, **extra}).encode() for v in q]


def closed_loop(
    port: int, payloads: list[bytes], clients: int, until: Callable[[], bool]
) -> list[float]:
    """Latencies (s) of `clients` connections sending back to back until `until()`."""
    times: list[list[float]] = [[] for _ in range(clients)]

    def loop(c: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        i = c
        while not until():
            started = time.perf_counter()
            post(conn, payloads[i % len(payloads)])
            times[c].append(time.perf_counter() - started)
            i += clients

    threads = [threading.Thread(target=loop, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [t for per in times for t in per]


def for_seconds(seconds: float) -> Callable[[], bool]:
    stop = time.perf_counter() + seconds
    return lambda: time.perf_counter() >= stop


# --- the offline truth ------------------------------------------------------------------


class Truth:
    """Exact top-k scores of the queries in the index's scoring space."""

    def __init__(self, workdir: Path) -> None:
        layout = IndexLayout(open_store(str(workdir / "store")))
        manifest = layout.load_manifest()
        self.manifest = manifest
        template = Template.read(
            str(workdir / "store" / "index" / "default" / manifest.trained.key)
        )
        name = "base.npy" if (workdir / "base.npy").exists() else "x.npy"  # x: --memmap
        base = np.load(workdir / name, mmap_mode="r")
        self.queries = np.load(workdir / "queries.npy")
        y = scoring_space(template, base, manifest.dtype)
        xq = template.project(self.queries)
        scores = np.empty((len(xq), K), np.float32)
        for start in range(0, len(xq), 100):
            block = xq[start : start + 100] @ y.T
            top = np.partition(-block, K - 1, axis=1)[:, :K]
            scores[start : start + 100] = -np.sort(top, axis=1)
        self.kth = scores[:, K - 1]

    def recall(self, answers: list[dict[str, Any]]) -> float:
        """Mean recall@k of the cluster's answers (ties at the k-th score are hits)."""
        got = [[h["similarity_score"] for h in a["results"]] for a in answers]
        hits = [
            sum(s >= kth - TIE_TOL for s in row) / K for row, kth in zip(got, self.kth, strict=True)
        ]
        return float(np.mean(hits))


def answers_of(port: int, payloads: list[bytes]) -> list[dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    return [post(conn, body) for body in payloads]


# --- 1. convergence ---------------------------------------------------------------------


def recall_mode(args: argparse.Namespace) -> dict[str, Any]:
    truth = Truth(args.workdir)
    nprobe = truth.manifest.params.nprobe
    low = max(1, nprobe // args.nprobe_divisor)
    cluster = Cluster(args.workdir, args.shards, args.port, {})
    result: dict[str, Any] = {"nprobe": nprobe, "low_nprobe": low, "window_s": args.window}
    try:
        cluster.start_router(
            {
                "SIMSEARCH_RECALL_FRACTION": str(args.fraction),
                "SIMSEARCH_RECALL_MAX_PER_S": str(args.cap),
                "SIMSEARCH_RECALL_WINDOW_S": str(args.window),
            }
        )
        normal, lowered = bodies(truth.queries), bodies(truth.queries, low)
        result["offline_recall"] = truth.recall(answers_of(args.port, normal))
        port = args.port
        samples = lambda: gauge(port, "simsearch_recall_samples") or 0.0  # noqa: E731
        started = time.perf_counter()
        closed_loop(port, normal, 8, lambda: samples() >= args.samples or _late(started, 600))
        result["samples"] = samples()
        result["gauge"] = gauge(port, "simsearch_recall_at_k")
        result["converge_s"] = time.perf_counter() - started
        result["difference"] = abs((result["gauge"] or 0) - result["offline_recall"])
        result["stats_recall"] = json.loads(get(port, "/stats")).get("recall")
        # measured only now: its low-nprobe answers would be sampled into the window above
        result["offline_recall_low"] = truth.recall(answers_of(args.port, lowered))
        # the nprobe switch, on a router with a short window: warm it at the normal nprobe,
        # then switch and watch the gauge
        cluster.start_router(
            {
                "SIMSEARCH_RECALL_FRACTION": str(args.fraction),
                "SIMSEARCH_RECALL_MAX_PER_S": str(args.cap),
                "SIMSEARCH_RECALL_WINDOW_S": str(args.follow_window),
            }
        )
        result["follow_window_s"] = args.follow_window
        closed_loop(port, normal, 8, for_seconds(args.follow_window))
        result["gauge_before_switch"] = gauge(port, "simsearch_recall_at_k")
        low_target = result["offline_recall_low"]
        result["timeline_low"] = _follow(port, lowered, low_target, args.follow_window)
    finally:
        cluster.close()
    return result


def _late(started: float, limit_s: float) -> bool:
    return time.perf_counter() - started > limit_s


def _follow(port: int, payloads: list[bytes], target: float, window: float) -> dict[str, Any]:
    """Load with `payloads` for 1.5 windows, the gauge read every second: when it came
    within 0.02 of `target` (seconds after the switch)."""
    points: list[tuple[float, float | None]] = []
    started = time.perf_counter()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            points.append((time.perf_counter() - started, gauge(port, "simsearch_recall_at_k")))
            stop.wait(1.0)

    watcher = threading.Thread(target=watch)
    watcher.start()
    closed_loop(port, payloads, 8, for_seconds(window * 1.5))
    stop.set()
    watcher.join()
    reached = next((t for t, g in points if g is not None and abs(g - target) <= 0.02), None)
    return {"reached_s": reached, "points": [[round(t, 1), g] for t, g in points]}


# --- 2. cost ----------------------------------------------------------------------------


def ab_mode(args: argparse.Namespace) -> dict[str, Any]:
    q = np.load(args.workdir / "queries.npy")
    payloads = bodies(q)
    cluster = Cluster(args.workdir, args.shards, args.port, {})
    runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    try:
        for round_ in range(args.rounds):
            order = ["off", "on"] if round_ % 2 == 0 else ["on", "off"]
            for arm in order:
                fraction = "0" if arm == "off" else str(args.fraction)
                cluster.start_router({"SIMSEARCH_RECALL_FRACTION": fraction})
                closed_loop(args.port, payloads, 8, for_seconds(3))  # warm-up
                times = closed_loop(args.port, payloads, 8, for_seconds(args.seconds))
                run = {
                    "p50_ms": float(np.percentile(times, 50) * 1000),
                    "p99_ms": float(np.percentile(times, 99) * 1000),
                    "qps": len(times) / args.seconds,
                    "samples": gauge(args.port, "simsearch_recall_samples") or 0.0,
                }
                runs[arm].append(run)
                print(arm, json.dumps(run), flush=True)
    finally:
        cluster.close()
    summary = {
        arm: {key: statistics.median(r[key] for r in rs) for key in rs[0]}
        for arm, rs in runs.items()
    }
    ratios = {key: summary["on"][key] / summary["off"][key] for key in ("p50_ms", "p99_ms", "qps")}
    return {"fraction": args.fraction, "runs": runs, "median": summary, "on_over_off": ratios}


# --- 3. sizing --------------------------------------------------------------------------


def in_cgroup(name: str, limit: int | None) -> Path:
    """A v1 memory cgroup `name` with `limit` bytes (None: unlimited)."""
    group = CGROUP / name
    group.mkdir(exist_ok=True)
    (group / "memory.limit_in_bytes").write_text(str(limit if limit else -1))
    return group


def memory_mode(args: argparse.Namespace) -> dict[str, Any]:
    """One shard with every partition, in a cgroup whose limit steps down."""
    q = np.load(args.workdir / "queries.npy")
    payloads = bodies(q)
    group = in_cgroup("simsearch-bench", None)
    env = {
        "SIMSEARCH_WORKING_SET_WINDOW_S": str(args.ws_window),
        "SIMSEARCH_MEMORY_SAMPLE_S": "0",
    }
    cluster = _cgroup_cluster(args, env, group)
    steps: list[dict[str, Any]] = []
    try:
        cluster.start_router({"SIMSEARCH_RECALL_FRACTION": "0"})
        # warm (fully cached), for longer than the kept working-set windows (5), so that
        # what the shard reports is steady traffic's working set, not its loading's
        closed_loop(args.port, payloads, 8, for_seconds(args.ws_window * 5.5))
        cached = _step(args, payloads, cluster, None)
        steps.append(cached)
        info = cached["memory"]
        for fraction in args.limits:
            limit = int(info["anonymous_bytes"] + fraction * info["file_bytes"])
            in_cgroup("simsearch-bench", limit)
            steps.append(_step(args, payloads, cluster, limit))
    finally:
        cluster.close()
    base = steps[0]["p99_ms"]
    ok = [s for s in steps[1:] if s["p99_ms"] <= 2 * base]
    smallest = min((s["limit_bytes"] for s in ok), default=None)
    return {
        "steps": steps,
        "cached_p99_ms": base,
        "needed_bytes_reported": steps[0]["memory"].get("needed_bytes"),
        "smallest_limit_within_2x": smallest,
    }


def _cgroup_cluster(args: argparse.Namespace, env: dict[str, str], group: Path) -> Cluster:
    """The cluster with its one shard started inside `group` (the router stays outside).

    The shard enters the cgroup before it execs Python, so everything it ever maps or
    allocates is charged there (cgroup v1 charges page cache to the group that read it).
    """
    launcher = args.workdir / "in-cgroup.sh"
    launcher.write_text(f'#!/bin/sh\necho $$ > {group}/cgroup.procs\nexec {sys.executable} "$@"\n')
    launcher.chmod(0o755)
    real = sys.executable
    sys.executable = str(launcher)  # spawn() runs [sys.executable, "-m", "simsearch.cli", …]
    try:
        return Cluster(args.workdir, 1, args.port, env)
    finally:
        sys.executable = real


def _step(
    args: argparse.Namespace, payloads: list[bytes], cluster: Cluster, limit: int | None
) -> dict[str, Any]:
    """p50/p99 at concurrency 8 for `--seconds` under `limit`, and what the shard reports."""
    times = closed_loop(args.port, payloads, 8, for_seconds(args.seconds))
    info = json.loads(get(cluster.shard_ports[0], "/info"))
    return {
        "limit_bytes": limit,
        "p50_ms": float(np.percentile(times, 50) * 1000),
        "p99_ms": float(np.percentile(times, 99) * 1000),
        "qps": len(times) / args.seconds,
        "memory": info.get("memory") or {},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["recall", "ab", "memory"])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--port", type=int, default=18900)
    parser.add_argument("--fraction", type=float, help="recall: 0.05; ab: 0.01")
    parser.add_argument("--cap", type=float, default=100.0, help="recall: samples/s cap")
    parser.add_argument("--window", type=float, default=300.0, help="recall: window (s)")
    parser.add_argument(
        "--follow-window", type=float, default=30.0, help="recall: window of the nprobe switch"
    )
    parser.add_argument("--samples", type=int, default=1000, help="recall: samples to wait for")
    parser.add_argument("--nprobe-divisor", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--ws-window", type=float, default=10.0, help="memory: WSS window (s)")
    parser.add_argument(
        "--limits",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[1.0, 0.75, 0.5, 0.25, 0.1],
        help="memory: limits as anonymous + this share of the cached file-backed memory",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.fraction is None:
        args.fraction = 0.05 if args.mode == "recall" else 0.01
    run = {"recall": recall_mode, "ab": ab_mode, "memory": memory_mode}[args.mode]
    result = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), **run(args)}
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
