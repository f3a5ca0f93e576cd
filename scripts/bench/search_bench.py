"""Sharded search vs one in-process FAISS index: congruence, recall, latency, QPS, memory.

    python scripts/bench/search_bench.py --n 100000 --dim 1280 --shards 2 \
        --out docs/bench/search_100k.json

1. Makes `n` clustered unit vectors (seeded; structure like real embeddings) and builds a
   real index with the project's writer (P partitions, parameters chosen from n).
2. Baseline, in this process: ONE FAISS index with the same template and vectors, the
   same nprobe, re-ranking k·refine candidates exactly (what the cluster must equal), with
   `--threads` FAISS threads; recall@10 of both against exact brute force.
3. The cluster: `--shards` shard processes + a router on loopback (`simsearch serve`);
   `POST /search/vector`, k=10: p50/p99 at concurrency 1, QPS at concurrency 8; the
   router's top-10 compared with the baseline's (ties tolerated like FAISS' own check).
4. Memory of each shard after the queries: RSS, anonymous (private) and file-backed.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from faiss.contrib.evaluation import check_ref_knn_with_draws

from simsearch.common.ann import Template, candidates, to_fast_scan
from simsearch.common.ids import key_ids
from simsearch.common.layout import IndexLayout
from simsearch.common.manifest import ModelInfo
from simsearch.common.storage import open_store
from simsearch.indexer.faissbuild import choose_params, fill_partition
from simsearch.indexer.writer import write_index

K = 10


def clustered(n: int, dim: int, seed: int, centres: int = 1000) -> np.ndarray:
    """Unit vectors around `centres` random centres, made in blocks to bound memory."""
    rng = np.random.default_rng(seed)
    middle = np.random.default_rng(12345).standard_normal((centres, dim)).astype(np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 50_000):
        m = min(50_000, n - start)
        x = middle[rng.integers(0, centres, m)]
        x += 0.8 * rng.standard_normal((m, dim)).astype(np.float32)
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def ground_truth(x: np.ndarray, q: np.ndarray, block: int = 131_072) -> np.ndarray:
    """Exact top-K rows by inner product, block by block (x may be a 15 GB memory map)."""
    best_s = np.full((len(q), K), -np.inf, np.float32)
    best_i = np.zeros((len(q), K), np.int64)
    for start in range(0, len(x), block):
        scores = q @ np.asarray(x[start : start + block], np.float32).T
        keep = min(K, scores.shape[1])
        part = np.argpartition(-scores, keep - 1, axis=1)[:, :keep]  # this block's best
        both_s = np.concatenate([best_s, np.take_along_axis(scores, part, 1)], axis=1)
        both_i = np.concatenate([best_i, part + start], axis=1)
        top = np.argsort(-both_s, axis=1, kind="stable")[:, :K]
        best_s = np.take_along_axis(both_s, top, 1)
        best_i = np.take_along_axis(both_i, top, 1)
    return best_i


def scoring_space(template: Template, x: np.ndarray, dtype: str) -> np.ndarray:
    """Every vector as the shards store it: projected (if the plan has a PCA), stored dtype."""
    out = np.empty((len(x), template.dim), dtype=np.float32)
    for start in range(0, len(x), 65_536):
        block = template.project(x[start : start + 65_536])
        out[start : start + len(block)] = block.astype(dtype).astype(np.float32)
    return out


def monolithic(template: Template, ids: np.ndarray, y: np.ndarray, cache: Path) -> Any:
    """ONE index with every vector, from the same template (cached: 1M adds take a while),
    converted to fast-scan blocks when the plan's codes are 4-bit, as a shard does."""
    if cache.exists():
        mono = faiss.read_index(str(cache))
    else:
        mono = fill_partition(template, ids, y)
        faiss.write_index(mono, str(cache))
    return to_fast_scan(mono) if template.fast_scan else mono


class Baseline:
    """The in-process reference: the shards' own pipeline over one monolithic index."""

    def __init__(
        self,
        template: Template,
        mono: Any,
        ids: np.ndarray,
        y: np.ndarray,
        nprobe: int,
        refine: int,
    ) -> None:
        self.template, self.mono, self.y = template, mono, y
        self.nprobe, self.kc = nprobe, K * refine
        self.row_of = np.argsort(ids)
        self.sorted_ids = ids[self.row_of]

    def search(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Top-K exact scores and ids of a batch of raw unit queries."""
        xq = self.template.project(queries)
        coarse_d, coarse_i = self.template.coarse(xq, self.nprobe)
        _, cand = candidates(self.mono, xq, self.kc, coarse_i, coarse_d)
        rows = self.row_of[np.searchsorted(self.sorted_ids, np.where(cand >= 0, cand, 0))]
        exact = np.einsum("qcd,qd->qc", self.y[rows], xq)
        exact = np.where(cand >= 0, exact, -np.inf)
        best = np.argsort(-exact, axis=1, kind="stable")[:, :K]
        return np.take_along_axis(exact, best, 1), np.take_along_axis(cand, best, 1)


def baseline(
    base: Baseline, q: np.ndarray, threads: int
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Reference answers, single-query latency (one thread) and QPS with `threads` threads
    each sending single queries (FAISS releases the GIL), as the issue's "in-process QPS"."""
    faiss.omp_set_num_threads(1)
    base.search(q[:1])
    times, results = [], []
    for query in q:
        started = time.perf_counter()
        results.append(base.search(query[None]))
        times.append(time.perf_counter() - started)
    qps, _ = closed_loop(threads, 5, lambda _t, i: base.search(q[i % len(q)][None]))
    faiss.omp_set_num_threads(threads)
    figures = {
        "p50_ms": float(np.percentile(times, 50) * 1000),
        "p99_ms": float(np.percentile(times, 99) * 1000),
        "qps_threads": qps,
    }
    return np.concatenate([r[0] for r in results]), np.concatenate([r[1] for r in results]), figures


def spawn(role: str, port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    full = {
        **os.environ,
        "SIMSEARCH_HOST": "127.0.0.1",
        "SIMSEARCH_PORT": str(port),
        "SIMSEARCH_LOG_LEVEL": "warning",
        **env,
    }
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "simsearch.cli", "serve", role],
            env=full,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_ready(port: int, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health/ready")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"port {port} not ready")


def bodies(q: np.ndarray) -> list[bytes]:
    """The request bodies, made once: the client's JSON encoding is not the cluster's cost."""
    return [json.dumps({"vector": vector.tolist(), "k": K}).encode() for vector in q]


def query(conn: http.client.HTTPConnection, body: bytes) -> dict[str, Any]:
    conn.request("POST", "/search/vector", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    data: dict[str, Any] = json.loads(response.read())
    if response.status != 200:
        raise RuntimeError(data)
    return data


def latency(port: int, q: list[bytes]) -> tuple[list[float], list[dict[str, Any]]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    query(conn, q[0])
    times, answers = [], []
    for vector in q:
        started = time.perf_counter()
        answers.append(query(conn, vector))
        times.append(time.perf_counter() - started)
    return times, answers


def throughput(
    port: int, q: list[bytes], clients: int, seconds: float, total: int | None = None
) -> tuple[float, int]:
    """Queries per second with `clients` connections for `seconds` (or until `total`)."""
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(clients)]
    return closed_loop(clients, seconds, lambda c, i: query(conns[c], q[i % len(q)]), total)


def closed_loop(
    workers: int, seconds: float, one: Callable[[int, int], object], total: int | None = None
) -> tuple[float, int]:
    """Calls per second of `one(worker, i)` from `workers` threads, each calling it back to
    back (i = worker, worker + workers, …) for `seconds` or until `total` calls in all."""
    counts = [0] * workers
    stop = time.perf_counter() + seconds

    def loop(w: int) -> None:
        i = w
        while time.perf_counter() < stop and (total is None or sum(counts) < total):
            one(w, i)
            counts[w] += 1
            i += workers

    threads = [threading.Thread(target=loop, args=(w,)) for w in range(workers)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - started), sum(counts)


def direct_shard(port: int, q: np.ndarray, k: int = K) -> dict[str, float]:
    """One shard called directly (no router) for its own partitions: the p50 of the call at
    the client, and of the shard's own `took_ms` (plan, FAISS, exact scores, paths)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/info")
    view = json.loads(conn.getresponse().read())["versions"][-1]
    calls, took = [], []
    for vector in q.astype("<f4"):
        body = json.dumps(
            {
                "version": view["version"],
                "partitions": view["ready"],
                "k": k,
                "dim": len(vector),
                "nq": 1,
                "vectors_b64": base64.b64encode(vector.tobytes()).decode(),
            }
        ).encode()
        started = time.perf_counter()
        conn.request("POST", "/search", body, {"Content-Type": "application/json"})
        answer = json.loads(conn.getresponse().read())
        calls.append(time.perf_counter() - started)
        took.append(answer["took_ms"])
    return {
        "p50_ms": float(np.percentile(calls[1:], 50) * 1000),
        "took_p50_ms": float(np.percentile(took[1:], 50)),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_per_query(pids: dict[str, int], run: Callable[[], int]) -> dict[str, float]:
    """CPU ms per query of each process (and of this client) over `run()`'s queries.

    Wall-clock profiles on 2 shared cores charge a process for the time it waits to be
    scheduled; CPU time does not, so this is where the per-query cost really goes."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    mine = time.process_time()
    queries = run()
    out = {name: (cpu_seconds(pid) - before[name]) * 1000 / queries for name, pid in pids.items()}
    out["client"] = (time.process_time() - mine) * 1000 / queries
    return {name: round(ms, 3) for name, ms in out.items()}


def loaded_pass(
    port: int, q: list[bytes], seconds: float, pids: dict[str, int]
) -> tuple[float, int, dict[str, float]]:
    """QPS with 8 clients for `seconds`, the queries served, and each process's CPU ms per
    query over that pass (`cpu_per_query`)."""
    measured: list[tuple[float, int]] = []

    def loaded() -> int:
        measured.append(throughput(port, q, 8, seconds))
        return measured[0][1]

    cpu = cpu_per_query(pids, loaded)
    return measured[0][0], measured[0][1], cpu


def memory(pid: int) -> dict[str, int]:
    """kB figures from /proc/PID/smaps_rollup (Linux)."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        fields[name] = int(value.split()[0])
    return {
        "rss_kb": fields["Rss"],
        "anonymous_kb": fields["Anonymous"],
        "file_backed_kb": fields["Rss"] - fields["Anonymous"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--partitions", type=int, default=64)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--port", type=int, default=18800)
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "simsearch-bench"
    )
    parser.add_argument("--reuse", action="store_true", help="reuse the index in --workdir")
    parser.add_argument(
        "--memory-after", type=int, default=10_000, help="queries served before memory is read"
    )
    parser.add_argument(
        "--data",
        choices=["clustered", "photo-like"],
        default="clustered",
        help="isotropic clusters, or the spectrum of real photo embeddings (recall_curve.py)",
    )
    parser.add_argument(
        "--nprobe", type=int, help="override the index's nprobe (shards and baseline alike)"
    )
    parser.add_argument(
        "--save-vectors",
        action="store_true",
        help="write base.npy, queries.npy, gt.npy (raw-space exact top-10 rows) to --workdir "
        "for peers_bench.py: the peers then search the same vectors and queries",
    )
    parser.add_argument(
        "--memmap",
        action="store_true",
        help="photo-like vectors in WORKDIR/x.npy, memory-mapped (for n that does not fit RAM)",
    )
    parser.add_argument(
        "--pca-dim",
        type=int,
        help="the scoring space's dimension (the model's own: no PCA, rank in the raw space)",
    )
    parser.add_argument(
        "--build-only",
        action="store_true",
        help="build the index, write base.npy (x.npy with --memmap) and queries.npy to "
        "--workdir, and stop "
        "(for monitor_bench.py's runs at 1M, which need no baseline)",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    faiss.omp_set_num_threads(args.threads)
    result: dict[str, Any] = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "n": args.n,
        "dim": args.dim,
        "partitions": args.partitions,
        "shards": args.shards,
        "threads": args.threads,
        "cores": os.cpu_count(),
    }
    if args.data == "photo-like":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from recall_curve import PhotoLike, real_embeddings  # a sibling script

        gen = PhotoLike(real_embeddings(args.workdir / "real.npy"), centres=20_000, within=0.35)
        q = gen.draw(args.queries, seed=2)
        if args.memmap:  # the vectors on disk: 3M × 1280-d float32 is 15 GB
            args.workdir.mkdir(parents=True, exist_ok=True)
            path = args.workdir / "x.npy"
            if args.reuse and path.exists():
                x = np.load(path, mmap_mode="r")
            else:
                x = np.lib.format.open_memmap(path, "w+", np.float32, (args.n, args.dim))
                gen.draw(args.n, seed=1, out=x)
                x.flush()
        else:
            x = gen.draw(args.n, seed=1)
    else:
        x = clustered(args.n, args.dim, seed=1)
        q = clustered(args.queries, args.dim, seed=2)
    result["data"] = args.data
    keys = [f"synthetic/{i:08d}.jpg" for i in range(args.n)]
    ids = key_ids(keys)
    store_dir = args.workdir / "store"
    args.workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    layout = IndexLayout(open_store(str(store_dir)))
    if args.reuse and layout.current() is not None:
        manifest = layout.load_manifest()
        if manifest.total != args.n or manifest.model.dim != args.dim:
            raise SystemExit(f"--reuse: {store_dir} holds {manifest.total}×{manifest.model.dim}")
        result["build_s"] = None  # built by an earlier run
    else:
        manifest = write_index(
            layout,
            ids,
            x,
            keys,
            ModelInfo(name="synthetic", dim=args.dim),
            partitions=args.partitions,
            params=choose_params(args.n, args.dim, pca_dim=args.pca_dim) if args.pca_dim else None,
            workdir=args.workdir,
        )
        result["build_s"] = time.perf_counter() - started
    if args.build_only:
        if not args.memmap:  # with --memmap the vectors are in x.npy already
            np.save(args.workdir / "base.npy", x)
        np.save(args.workdir / "queries.npy", q)
        print(json.dumps(result, indent=2))
        return
    params = manifest.params
    result["params"] = params.model_dump()
    template = Template.read(str(store_dir / "index" / "default" / manifest.trained.key))
    y = scoring_space(template, x, manifest.dtype)
    mono = monolithic(template, ids, y, args.workdir / f"mono-{manifest.version}.faiss")
    nprobe = args.nprobe or params.nprobe
    result["nprobe"] = nprobe
    result["probe"] = manifest.probe.model_dump() if manifest.probe else None
    base = Baseline(template, mono, ids, y, nprobe, params.refine)
    ref_d, ref_i, figures = baseline(base, q, args.threads)
    truth = ids[ground_truth(y, template.project(q))]  # exact, in the scoring space
    rows_raw = ground_truth(x, q)
    truth_raw = ids[rows_raw]
    if args.save_vectors:
        np.save(args.workdir / "base.npy", x)
        np.save(args.workdir / "queries.npy", q)
        np.save(args.workdir / "gt.npy", rows_raw.astype(np.int64))
    result["baseline"] = figures
    result["baseline_qps_single"] = 1000 / figures["p50_ms"]
    result["recall_at_10_baseline"] = float(
        np.mean([len(set(a) & set(b)) / K for a, b in zip(ref_i, truth, strict=True)])
    )
    result["recall_at_10_baseline_raw_space"] = float(
        np.mean([len(set(a) & set(b)) / K for a, b in zip(ref_i, truth_raw, strict=True)])
    )
    del x, y, mono, base
    logs = args.workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    shard_ports = [args.port + 1 + s for s in range(args.shards)]
    shards = [
        spawn(
            "shard",
            port,
            {
                "SIMSEARCH_STORE": str(store_dir),
                "SIMSEARCH_SHARD_ORDINAL": str(s),
                "SIMSEARCH_REPLICAS": str(args.shards),
                "SIMSEARCH_CACHE_DIR": str(args.workdir / f"cache-{s}"),
                **({"SIMSEARCH_NPROBE": str(args.nprobe)} if args.nprobe else {}),
            },
            logs / f"shard-{s}.log",
        )
        for s, port in enumerate(shard_ports)
    ]
    started = time.perf_counter()
    for port in shard_ports:
        wait_ready(port)
    result["shards_ready_s"] = time.perf_counter() - started
    router = spawn(
        "router",
        args.port,
        {
            "SIMSEARCH_SHARDS": ",".join(f"http://127.0.0.1:{p}" for p in shard_ports),
            "SIMSEARCH_TIMEOUT_MS": "30000",  # the warm-up below may read pages from disk
        },
        logs / "router.log",
    )
    try:
        wait_ready(args.port)
        payloads = bodies(q)
        latency(args.port, payloads)  # warm-up: after a restart the mmapped pages may be cold
        times, answers = latency(args.port, payloads)
        got_i = np.array([[h["id"] for h in a["results"]] for a in answers])
        got_d = np.array(
            [[h["similarity_score"] for h in a["results"]] for a in answers], dtype=np.float32
        )
        mismatches = 0
        for row in range(len(q)):
            try:
                check_ref_knn_with_draws(
                    ref_d[row : row + 1],
                    ref_i[row : row + 1],
                    got_d[row : row + 1],
                    got_i[row : row + 1],
                    rtol=1e-4,
                )
            except AssertionError:
                mismatches += 1
        result["congruence_mismatched_queries"] = mismatches
        result["recall_at_10_cluster"] = float(
            np.mean([len(set(a) & set(b)) / K for a, b in zip(got_i, truth, strict=True)])
        )
        result["p50_ms"] = float(np.percentile(times, 50) * 1000)
        result["p99_ms"] = float(np.percentile(times, 99) * 1000)
        result["shard_0_direct"] = direct_shard(shard_ports[0], q)
        pids = {"router": router.pid, **{f"shard-{i}": p.pid for i, p in enumerate(shards)}}
        result["cpu_ms_per_query_c1"] = cpu_per_query(
            pids, lambda: len(latency(args.port, payloads)[0]) + 1
        )
        result["qps_c8"], loaded, result["cpu_ms_per_query_c8"] = loaded_pass(
            args.port, payloads, args.seconds, pids
        )
        result["qps_c8_over_baseline"] = result["qps_c8"] / figures["qps_threads"]
        served = loaded + 3 * (len(q) + 1)  # + warm-up, latency, CPU passes
        if served < args.memory_after:
            served += throughput(args.port, payloads, 8, 3600, args.memory_after - served)[1]
        result["queries_before_memory"] = served
        result["shard_memory"] = [memory(s.pid) for s in shards]
    finally:
        for proc in [router, *shards]:
            proc.terminate()
            proc.wait(timeout=30)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
