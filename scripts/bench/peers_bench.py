"""Peer vector-search systems side by side: the cheapest operating point at recall@10 ≥ 0.95.

    python scripts/bench/peers_bench.py --workdir /tmp/peers1m --n 1000000 --data photo-like \
        --out docs/bench/peers_1m.json

Why: "FAISS IVF-PQ is the right engine" is only a claim until the same vectors and queries
go through the alternatives. Every system here gets the same `base.npy`, `queries.npy` and
exact `gt.npy`; for each one the script sweeps the search-time knob that trades recall for
speed and reports, per operating point, recall@10, single-query p50/p99 latency, QPS with 8
client threads sending single queries, and a batched QPS with the library limited to two
threads. The "chosen" point is the one with the highest 8-thread QPS among those reaching
recall 0.95 — what a deployment would pick.

Peers are never project dependencies: they live in a scratch venv outside the repository
(`--venv`, made with `python3.11 -m venv` and pip on first use). This process only needs
numpy; each system runs in its own subprocess of the scratch venv's python
(`peers_bench.py --worker NAME ...`), so a peer that is missing, crashes or builds for too
long (`--timeout-build-s`, enforced by killing the worker's process group) is recorded in
the output and the others still run.

Systems and their knobs (see docs/bench/peers_README.md):

- faiss:   `IVF{4·√n},PQ{d/2}x4fs` + `IndexRefineFlat` (k_factor 10); sweep nprobe.
- faiss-pca256: the same after a PCA256 pre-transform (`PQ128x4fs`, 64-byte codes), L2 on
           the unit rows (a centred PCA breaks inner-product ranking), k_factor 20.
- scann:   tree(2·√n leaves) + score_ah(2, threshold 0.2) + reorder(100); sweep leaves.
- hnswlib: M 16, ef_construction 200, inner product; sweep ef.
- lancedb: IVF_PQ (√n partitions, d/8 sub-vectors), refine_factor 10; sweep nprobes.
- chroma:  `chroma run` on 127.0.0.1, HttpClient, HNSW ip (M 16, ef_construction 200);
           sweep ef_search through `collection.modify` + a server restart (the running
           server keeps the ef it loaded the index with).

All network traffic is to 127.0.0.1 (the Chroma server), bounded in time and count.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from pathlib import Path
from typing import IO, Any

import numpy as np

HERE = Path(__file__).resolve().parent
K = 10
TARGET = 0.95
CLIENT_THREADS = 8
BATCH_THREADS = 2
SYSTEMS = ("faiss", "faiss-pca256", "scann", "hnswlib", "lancedb", "chroma")
# pip name of each system's package, and the module it imports as.
PACKAGE = {
    "faiss": "faiss-cpu",
    "faiss-pca256": "faiss-cpu",
    "scann": "scann",
    "hnswlib": "hnswlib",
    "lancedb": "lancedb",
    "chroma": "chromadb",
}
MODULE = {
    "numpy": "numpy",
    "faiss-cpu": "faiss",
    "scann": "scann",
    "hnswlib": "hnswlib",
    "lancedb": "lancedb",
    "chromadb": "chromadb",
}
INSTALL_ORDER = ("numpy", "faiss-cpu", "hnswlib", "scann", "lancedb", "chromadb")
STARTED = time.perf_counter()

Row = dict[str, Any]
Search = Callable[[np.ndarray], np.ndarray]


# ---------------------------------------------------------------- logging and small helpers


def log(tag: str, message: str) -> None:
    """One progress line on stderr with the elapsed time: builds take long, so show them."""
    print(f"[{tag} +{time.perf_counter() - STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


def cores() -> int:
    """CPUs this process may use (the affinity mask, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def tail(text: str, lines: int = 15) -> str:
    """The end of a long error output: what usually says why."""
    return "\n".join(text.strip().splitlines()[-lines:])


def machine_info() -> Row:
    """What the numbers depend on: cores, CPU model, memory and the load when we started."""
    model = "unknown"
    memory_kb = 0
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory_kb = int(line.split()[1])
    return {
        "nproc": cores(),
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(memory_kb / 2**20, 1),
        "platform": platform.platform(),
        "loadavg_at_start": list(os.getloadavg()),
        "python_main": platform.python_version(),
    }


# ------------------------------------------------------------------------------------- data


def clustered(n: int, seed: int, dim: int, centres: int = 1000) -> Iterator[np.ndarray]:
    """A seeded Gaussian mixture of unit vectors, in blocks of 50k so 1M never sits in RAM.

    The fallback when the photo-like generator (which needs the project's embedder or a
    cached `real.npy`) is not available; the same recipe as search_bench.py's `clustered`.
    """
    middle = np.random.default_rng(12345).standard_normal((centres, dim)).astype(np.float32)
    for block, start in enumerate(range(0, n, 50_000)):
        rng = np.random.default_rng([seed, block])
        m = min(50_000, n - start)
        x = middle[rng.integers(0, centres, m)]
        x += 0.8 * rng.standard_normal((m, dim)).astype(np.float32)
        yield x / np.linalg.norm(x, axis=1, keepdims=True)


def photo_like(workdir: Path) -> Callable[[int, int], Iterator[np.ndarray]] | None:
    """The project's photo-like generator (recall_curve.py), or None when it can't be had.

    `real_embeddings` reads `real.npy` from the workdir or embeds the photos with the
    project's EfficientNet-Lite0, which needs the project's venv (torch, faiss).
    """
    if not (workdir / "real.npy").exists():
        log("data", "embedding the photos for real.npy with EfficientNet-Lite0 (first run only)")
    try:
        sys.path.insert(0, str(HERE))
        from recall_curve import PhotoLike, real_embeddings  # a sibling script

        gen = PhotoLike(real_embeddings(workdir / "real.npy"), centres=20_000, within=0.35)
    except Exception as exc:  # any failure means: use the fallback, and say so
        log("data", f"photo-like generator unavailable ({type(exc).__name__}: {exc})")
        return None

    def blocks(n: int, seed: int) -> Iterator[np.ndarray]:
        for block, start in enumerate(range(0, n, 50_000)):
            yield gen.draw(min(50_000, n - start), seed=seed * 100_003 + block)

    return blocks


def write_blocks(path: Path, blocks: Iterator[np.ndarray], n: int, dim: int) -> None:
    """Stream blocks into a .npy memmap, renamed at the end so a half file is never used."""
    part = path.with_suffix(".part.npy")
    out = np.lib.format.open_memmap(part, mode="w+", dtype=np.float32, shape=(n, dim))
    start = 0
    for block in blocks:
        out[start : start + len(block)] = block
        start += len(block)
        log("data", f"{path.name}: {start:,}/{n:,} rows")
    out.flush()
    del out
    part.rename(path)


def exact_top_k(base: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    """Exact top-k rows by inner product, base scanned in blocks (faiss when importable)."""
    faiss: Any
    try:
        import faiss
    except ImportError:
        faiss = None
    nq = len(queries)
    best_s = np.full((nq, k), -np.inf, np.float32)
    best_i = np.full((nq, k), -1, np.int64)
    block = 50_000
    for start in range(0, len(base), block):
        chunk = np.ascontiguousarray(base[start : start + block], dtype=np.float32)
        if faiss is not None:
            flat = faiss.IndexFlatIP(chunk.shape[1])
            flat.add(chunk)
            s, i = flat.search(queries, min(k, len(chunk)))
        else:
            scores = queries @ chunk.T
            i = np.argpartition(-scores, min(k, len(chunk)) - 1, axis=1)[:, :k]
            s = np.take_along_axis(scores, i, axis=1)
        all_s = np.hstack([best_s, s])
        all_i = np.hstack([best_i, i.astype(np.int64) + start])
        order = np.argsort(-all_s, axis=1, kind="stable")[:, :k]
        best_s = np.take_along_axis(all_s, order, axis=1)
        best_i = np.take_along_axis(all_i, order, axis=1)
        if (start // block) % 10 == 0:
            log("data", f"ground truth: {min(start + block, len(base)):,}/{len(base):,} rows")
    return best_i


def ensure_data(args: argparse.Namespace) -> Row:
    """Make (or reuse) base/queries/gt in the workdir; gt for a prefix n is cached apart."""
    work: Path = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    base_path, query_path = work / "base.npy", work / "queries.npy"
    kind_path = work / "data.json"
    if not base_path.exists() or not query_path.exists():
        if args.n is None:
            raise SystemExit(f"{base_path} is missing: pass --n to generate it")
        kind = args.data
        blocks = photo_like(work) if kind == "photo-like" else None
        if blocks is None:
            kind = "clustered"
            blocks = functools.partial(clustered, dim=args.dim)
        first = next(blocks(1, 2))
        log("data", f"generating {kind}: n={args.n:,}, nq={args.nq:,}, d={first.shape[1]}")
        write_blocks(query_path, blocks(args.nq, 2), args.nq, first.shape[1])
        write_blocks(base_path, blocks(args.n, 1), args.n, first.shape[1])
        kind_path.write_text(json.dumps({"data": kind, "requested": args.data}))
    base = np.load(base_path, mmap_mode="r")
    queries = np.load(query_path, mmap_mode="r")
    n = args.n or len(base)
    if n > len(base) or args.nq > len(queries):
        raise SystemExit(
            f"{work} holds {len(base):,} base rows and {len(queries):,} queries; asked for "
            f"n={n:,}, nq={args.nq:,} (use a fresh --workdir to generate more)"
        )
    gt_path = work / "gt.npy" if n == len(base) else work / f"gt_n{n}.npy"
    if not gt_path.exists() or len(np.load(gt_path, mmap_mode="r")) < len(queries):
        log("data", f"exact ground truth for n={n:,} ({len(queries):,} queries)")
        np.save(gt_path, exact_top_k(base[:n], np.ascontiguousarray(queries, np.float32)))
    meta = json.loads(kind_path.read_text()) if kind_path.exists() else {"data": "given"}
    return {
        **meta,
        "workdir": str(work),
        "base": str(base_path),
        "queries": str(query_path),
        "gt": str(gt_path),
        "n": n,
        "nq": args.nq,
        "d": int(base.shape[1]),
    }


# ------------------------------------------------------------------------- the scratch venv


def scratch_python(venv: Path) -> Path:
    """The scratch venv's interpreter (the peers run only there)."""
    return venv / "bin" / "python"


def missing_modules(python: Path, packages: Sequence[str]) -> list[str]:
    """Packages whose module the scratch python cannot find (find_spec: no import cost)."""
    code = (
        "import importlib.util, sys; "
        "print(' '.join(a for a in sys.argv[1:] if importlib.util.find_spec(a.split('=')[1]) "
        "is None))"
    )
    pairs = [f"{p}={MODULE[p]}" for p in packages]
    out = subprocess.run(
        [str(python), "-c", code, *pairs], capture_output=True, text=True, timeout=120
    )
    return [p.split("=")[0] for p in out.stdout.split()]


def ensure_venv(venv: Path, interpreter: str, packages: Sequence[str]) -> dict[str, str]:
    """Create the scratch venv and pip-install what is missing, one package at a time.

    One at a time so that a package with no wheel for this platform costs only its own
    system; returns {package: why it failed}.
    """
    python = scratch_python(venv)
    if not python.exists():
        log("venv", f"creating {venv} with {interpreter}")
        subprocess.run([interpreter, "-m", "venv", str(venv)], check=True, timeout=600)
    errors: dict[str, str] = {}
    for package in missing_modules(python, packages):
        log("venv", f"pip install {package} (may take minutes)")
        try:
            done = subprocess.run(
                [str(python), "-m", "pip", "install", "--progress-bar", "off", package],
                capture_output=True,
                text=True,
                timeout=1800,
            )
        except subprocess.TimeoutExpired:
            errors[package] = "pip install timed out after 1800 s"
            continue
        if done.returncode != 0:
            errors[package] = tail(done.stdout + done.stderr)
            log("venv", f"pip install {package} failed:\n{errors[package]}")
    return errors


def peer_versions(venv: Path) -> dict[str, str | None]:
    """Installed versions of the peer packages in the scratch venv (None: not installed)."""
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {}\n"
        "for p in sys.argv[1:]:\n"
        "    try: out[p] = m.version(p)\n"
        "    except m.PackageNotFoundError: out[p] = None\n"
        "out['python'] = sys.version.split()[0]\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run(
        [str(scratch_python(venv)), "-c", code, *INSTALL_ORDER, "pyarrow"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    parsed: dict[str, str | None] = json.loads(done.stdout)
    return parsed


# --------------------------------------------------------------------- measuring (workers)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the exact top-10 among the returned 10 (padding -1 never matches)."""
    hits = [len(np.intersect1d(f[f >= 0], t)) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits)) / int(truth.shape[1])


def single_pass(search: Search, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every query once, one at a time: the ids (for recall) and each latency in ms."""
    found = np.full((len(queries), K), -1, np.int64)
    ms = np.empty(len(queries))
    for row, query in enumerate(queries):
        started = time.perf_counter()
        ids = search(query)
        ms[row] = (time.perf_counter() - started) * 1000
        found[row, : min(K, len(ids))] = ids[:K]
    return found, ms


def concurrent_qps(
    make_client: Callable[[], Search], queries: np.ndarray, threads: int, seconds: float
) -> float:
    """Queries per second with `threads` clients each sending single queries for `seconds`.

    Clients are made before the clock starts (an HTTP client per thread for Chroma); the
    loop is bounded by time, and by one pass over 10⁶ queries per thread at most.
    """
    clients = [make_client() for _ in range(threads)]
    counts = [0] * threads
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads + 1)
    stop_at = [0.0]

    def run(slot: int) -> None:
        search, i = clients[slot], slot * 97
        barrier.wait()
        try:
            while time.perf_counter() < stop_at[0] and counts[slot] < 1_000_000:
                search(queries[i % len(queries)])
                counts[slot] += 1
                i += 1
        except BaseException as exc:  # re-raised below: a failing client must not look slow
            errors.append(exc)

    pool = [threading.Thread(target=run, args=(slot,), daemon=True) for slot in range(threads)]
    for thread in pool:
        thread.start()
    started = time.perf_counter()
    stop_at[0] = started + seconds
    barrier.wait()
    for thread in pool:
        thread.join(timeout=seconds + 120)
    if errors:
        raise errors[0]
    return sum(counts) / (time.perf_counter() - started)


def batched_qps(
    search_batch: Callable[[np.ndarray], object], queries: np.ndarray, s: float
) -> float:
    """Queries per second of whole-batch calls, repeated for about `s` seconds (at least once)."""
    done = 0
    started = time.perf_counter()
    while True:
        search_batch(queries)
        done += len(queries)
        if time.perf_counter() - started >= s:
            return done / (time.perf_counter() - started)


def gil_probe(search: Search, queries: np.ndarray, seconds: float = 1.0) -> Row:
    """Does a search call let other Python threads run? Measured, not taken from docs.

    A ticker thread sleeps 0.2 ms in a loop and counts wake-ups. While another thread is
    inside a search that holds the GIL, the ticker cannot resume until that call returns;
    when the GIL is released it keeps (nearly) its idle rate. The ratio of the two rates is
    reported; releases_gil means ≥ 0.5.
    """

    def ticks(duration: float, busy: Callable[[], None] | None) -> float:
        stop = threading.Event()
        count = [0]

        def tick() -> None:
            while not stop.is_set():
                time.sleep(0.0002)
                count[0] += 1

        ticker = threading.Thread(target=tick, daemon=True)
        ticker.start()
        end = time.perf_counter() + duration
        while time.perf_counter() < end:
            if busy is None:
                time.sleep(0.01)
            else:
                busy()
        stop.set()
        ticker.join(timeout=10)
        return count[0] / duration

    state = {"i": 0}

    def busy() -> None:
        search(queries[state["i"] % len(queries)])
        state["i"] += 1

    idle = ticks(seconds / 2, None)
    loaded = ticks(seconds, busy)
    ratio = loaded / idle if idle else 0.0
    return {"ticker_rate_ratio": round(ratio, 3), "releases_gil": ratio >= 0.5}


# --------------------------------------------------------------------------------- the peers


class Peer:
    """One system: build it, list its operating points, search at one of them.

    Subclasses set `knob` (the name of the swept parameter) and `values`; `batched`
    returns None where the library has no batch call. `client()` gives a per-thread search
    function (the same one for in-process libraries, a new HTTP client for Chroma).
    """

    name = "peer"
    knob = ""
    in_process = True
    batch_note = f"library threads limited to {BATCH_THREADS}"

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.params: Row = {}
        self.point_extra: Row = {}  # set_point's own figures, added to the point's row

    def build(self, base: np.ndarray) -> None:
        """Insert/train everything; timed as build_s and bounded by --timeout-build-s."""
        raise NotImplementedError

    def values(self) -> list[int]:
        """The knob's values, cheapest first, so the sweep can stop once past 0.95."""
        raise NotImplementedError

    def set_point(self, value: int) -> None:
        """Switch to one operating point before it is measured."""
        raise NotImplementedError

    def search(self, query: np.ndarray) -> np.ndarray:
        """One query, the top-10 row numbers: the only call that is timed per query."""
        raise NotImplementedError

    def client(self) -> Search:
        """A search function for one client thread (in-process: the shared index)."""
        return self.search

    def batched(self, queries: np.ndarray, seconds: float) -> float | None:
        """Batched QPS at the current point with the library's threads limited (None: n/a)."""
        return None

    def close(self) -> None:
        """Free what the peer holds (servers, files); called even after a failure."""


def doubling(low: int, high: int) -> list[int]:
    """1, 2, 4, … from low up to high inclusive (high itself last when not a power)."""
    out, v = [], low
    while v < high:
        out.append(v)
        v *= 2
    return [*out, high]


class FaissPeer(Peer):
    """The in-process reference: 4-bit fast-scan IVF-PQ, exact re-rank of 10·k candidates.

    `PQ{d/2}x4fs` is two dimensions per 4-bit code, the same code size as ScaNN's
    score_ah(2); the PCA variant below is the small-code alternative.
    """

    name, knob = "faiss", "nprobe"
    pca = 0
    k_factor = 10

    def metric(self, base: np.ndarray) -> str:
        """Inner product: without a pre-transform it is the ranking asked for as it is."""
        return "ip"

    def build(self, base: np.ndarray) -> None:
        # Client threads are new OpenMP threads: they read this default, so each single
        # query runs on one FAISS thread (as the shards do); build and batch set their own.
        os.environ["OMP_NUM_THREADS"] = "1"
        import faiss

        n, d = base.shape
        nlist = max(1, min(int(4 * math.sqrt(n)), n // 39))
        pre, m = (f"PCA{self.pca},", self.pca // 2) if 0 < self.pca < d else ("", d // 2)
        factory = f"{pre}IVF{nlist},PQ{m}x4fs,RFlat"
        train = min(n, max(100_000, 50 * nlist))
        metric = self.metric(base)
        self.params = {
            "factory": factory,
            "metric": metric,
            "k_factor": self.k_factor,
            "train": train,
            "nlist": nlist,
        }
        faiss.omp_set_num_threads(cores())
        kind = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
        self.index = faiss.index_factory(d, factory, kind)
        rows = np.sort(np.random.default_rng(0).choice(n, train, replace=False))
        log(self.name, f"{factory}: training on {train:,} rows")
        self.index.train(np.ascontiguousarray(base[rows], dtype=np.float32))
        for start in range(0, n, 100_000):
            self.index.add(np.ascontiguousarray(base[start : start + 100_000], np.float32))
            log(self.name, f"added {min(start + 100_000, n):,}/{n:,}")
        faiss.omp_set_num_threads(1)
        self.space = faiss.ParameterSpace()
        self.space.set_index_parameter(self.index, "k_factor_rf", self.k_factor)
        self.nlist = nlist

    def values(self) -> list[int]:
        return doubling(1, self.nlist)

    def set_point(self, value: int) -> None:
        self.space.set_index_parameter(self.index, "nprobe", value)

    def search(self, query: np.ndarray) -> np.ndarray:
        return np.asarray(self.index.search(query[None], K)[1][0], np.int64)

    def batched(self, queries: np.ndarray, seconds: float) -> float:
        import faiss

        faiss.omp_set_num_threads(BATCH_THREADS)
        try:
            return batched_qps(lambda q: self.index.search(q, K), queries, seconds)
        finally:
            faiss.omp_set_num_threads(1)


class FaissPcaPeer(FaissPeer):
    """FAISS with a PCA256 pre-transform: 64-byte codes, the full vectors only for re-rank.

    FAISS's PCA subtracts the mean, and an inner product after centring ranks by
    x·(q − μ), not x·q: on the photo-like vectors (‖μ‖ ≈ 0.5) that capped recall at 0.79
    even with every list probed. L2 is translation-invariant and, on unit rows, ranks
    exactly like the inner product, so it is used whenever the rows are unit length.
    With 2 PCA dimensions per 4-bit code, 100 candidates left recall at 0.92 (20k rows,
    every list), 200 reach 0.97: hence k_factor 20.
    """

    name, pca, k_factor = "faiss-pca256", 256, 20

    def metric(self, base: np.ndarray) -> str:
        sample = np.asarray(base[:: max(1, len(base) // 1000)], np.float32)
        unit = bool(np.allclose(np.linalg.norm(sample, axis=1), 1.0, atol=1e-3))
        if not unit:
            log(self.name, "rows are not unit length: inner product after a centred PCA")
        return "l2" if unit else "ip"


class ScannPeer(Peer):
    """ScaNN: partitioning tree, anisotropic 4-bit AH scoring, exact reorder of 100."""

    name, knob = "scann", "leaves_to_search"

    def build(self, base: np.ndarray) -> None:
        import scann

        n, _ = base.shape
        leaves = max(2, int(2 * math.sqrt(n)))
        sample = min(n, 250_000)
        self.params = {
            "num_leaves": leaves,
            "training_sample_size": sample,
            "score_ah": [2, {"anisotropic_quantization_threshold": 0.2}],
            "reorder": 100,
            "distance": "dot_product",
        }
        data = np.ascontiguousarray(base, dtype=np.float32)
        log(self.name, f"building: {leaves} leaves (one call, no progress of its own)")
        builder = (
            scann.scann_ops_pybind.builder(data, K, "dot_product")
            .tree(
                num_leaves=leaves, num_leaves_to_search=min(leaves, 32), training_sample_size=sample
            )
            .score_ah(2, anisotropic_quantization_threshold=0.2)
            .reorder(100)
        )
        builder.set_n_training_threads(cores())
        self.searcher = builder.build()
        del data
        self.leaves = leaves
        self.value = 1

    def values(self) -> list[int]:
        return doubling(1, self.leaves)

    def set_point(self, value: int) -> None:
        self.value = value

    def search(self, query: np.ndarray) -> np.ndarray:
        ids, _ = self.searcher.search(
            query, final_num_neighbors=K, pre_reorder_num_neighbors=100, leaves_to_search=self.value
        )
        return np.asarray(ids, np.int64)

    def batched(self, queries: np.ndarray, seconds: float) -> float:
        self.searcher.set_num_threads(BATCH_THREADS)

        def run(q: np.ndarray) -> object:
            return self.searcher.search_batched_parallel(
                q, final_num_neighbors=K, pre_reorder_num_neighbors=100, leaves_to_search=self.value
            )

        return batched_qps(run, queries, seconds)


class HnswPeer(Peer):
    """hnswlib: the HNSW graph most vector databases embed (Chroma included)."""

    name, knob = "hnswlib", "ef"

    def build(self, base: np.ndarray) -> None:
        import hnswlib

        n, d = base.shape
        self.params = {"M": 16, "ef_construction": 200, "space": "ip", "threads": cores()}
        self.index = hnswlib.Index(space="ip", dim=d)
        self.index.init_index(max_elements=n, ef_construction=200, M=16, random_seed=100)
        self.index.set_num_threads(cores())
        step = 20_000
        for start in range(0, n, step):
            chunk = np.ascontiguousarray(base[start : start + step], np.float32)
            self.index.add_items(chunk, np.arange(start, start + len(chunk)))
            if (start // step) % 5 == 4 or start + step >= n:
                log(self.name, f"inserted {min(start + step, n):,}/{n:,}")

    def values(self) -> list[int]:
        return [10, 20, 40, 80, 160, 320, 640]

    def set_point(self, value: int) -> None:
        self.index.set_ef(value)

    def search(self, query: np.ndarray) -> np.ndarray:
        labels, _ = self.index.knn_query(query[None], k=K, num_threads=1)
        return np.asarray(labels[0], np.int64)

    def batched(self, queries: np.ndarray, seconds: float) -> float:
        return batched_qps(
            lambda q: self.index.knn_query(q, k=K, num_threads=BATCH_THREADS), queries, seconds
        )


class LancePeer(Peer):
    """LanceDB (embedded, on disk): IVF_PQ with an exact refine of 10·k candidates.

    Lance sizes its CPU pool once per process from LANCE_CPU_THREADS, so the two-thread
    batched figure comes from a child process that reopens the table with that variable.
    """

    name, knob = "lancedb", "nprobes"
    batch_note = f"multi-vector query in a child with LANCE_CPU_THREADS={BATCH_THREADS}"

    def build(self, base: np.ndarray) -> None:
        import lancedb
        import pyarrow as pa
        from lancedb.index import IvfPq

        n, d = base.shape
        partitions = max(1, int(math.sqrt(n)))
        subvectors = d // 8 if d % 8 == 0 else d // 4
        self.params = {
            "index_type": "IVF_PQ",
            "metric": "dot",
            "num_partitions": partitions,
            "num_sub_vectors": subvectors,
            "num_bits": 8,
            "refine_factor": 10,
        }
        path = self.scratch / "lance"
        shutil.rmtree(path, ignore_errors=True)
        db = lancedb.connect(str(path))
        table = None
        for start in range(0, n, 50_000):
            chunk = np.ascontiguousarray(base[start : start + 50_000], np.float32)
            batch = pa.table(
                {
                    "id": pa.array(np.arange(start, start + len(chunk), dtype=np.int64)),
                    "vector": pa.FixedSizeListArray.from_arrays(pa.array(chunk.ravel()), d),
                }
            )
            if table is None:
                table = db.create_table("bench", data=batch, mode="overwrite")
            else:
                table.add(batch)
            log(self.name, f"written {min(start + 50_000, n):,}/{n:,}")
        assert table is not None
        log(self.name, f"IVF_PQ index: {partitions} partitions, {subvectors} sub-vectors")
        config = IvfPq(distance_type="dot", num_partitions=partitions, num_sub_vectors=subvectors)
        table.create_index("vector", config=config)
        self.table = table
        self.path = path
        self.value = 1

    def values(self) -> list[int]:
        return doubling(1, int(self.params["num_partitions"]))

    def set_point(self, value: int) -> None:
        self.value = value

    def query(self, vectors: Any) -> Any:
        return (
            self.table.search(vectors)
            .distance_type("dot")
            .nprobes(self.value)
            .refine_factor(10)
            .limit(K)
            .select(["id", "_distance"])
            .to_arrow()
        )

    def search(self, query: np.ndarray) -> np.ndarray:
        return np.asarray(self.query(query)["id"].to_numpy(), np.int64)

    def batched(self, queries: np.ndarray, seconds: float) -> float:
        env = dict(os.environ, LANCE_CPU_THREADS=str(BATCH_THREADS))
        spec = json.dumps({"path": str(self.path), "nprobes": self.value, "seconds": seconds})
        np.save(self.scratch / "batch_queries.npy", queries)
        done = subprocess.run(
            [sys.executable, __file__, "--lance-batch", spec, "--workdir", str(self.scratch)],
            capture_output=True,
            text=True,
            env=env,
            timeout=seconds * 20 + 300,
        )
        if done.returncode != 0:
            raise RuntimeError(f"lance batch child failed: {tail(done.stderr)}")
        return float(done.stdout.strip().splitlines()[-1])


def lance_batch_child(spec_json: str, scratch: Path) -> int:
    """The LANCE_CPU_THREADS-limited process: reopen the table, time multi-vector queries."""
    import lancedb

    spec = json.loads(spec_json)
    table = lancedb.connect(spec["path"]).open_table("bench")
    queries = np.load(scratch / "batch_queries.npy")

    def run(q: np.ndarray) -> object:
        return (
            table.search(list(q))
            .distance_type("dot")
            .nprobes(spec["nprobes"])
            .refine_factor(10)
            .limit(K)
            .select(["id", "_distance"])
            .to_arrow()
        )

    print(batched_qps(run, queries, spec["seconds"]), flush=True)
    return 0


def free_port() -> int:
    """A free loopback port, asked of the kernel (bind to port 0), for the Chroma server."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_heartbeat(url: str, server: subprocess.Popen[bytes], limit_s: float = 180) -> float:
    """Poll the server's heartbeat until it answers 200: bounded in time, never a blind sleep."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit_s:
        if server.poll() is not None:
            raise RuntimeError(f"chroma server exited with {server.returncode} before answering")
        with suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                return time.perf_counter() - started
        time.sleep(0.2)
    raise TimeoutError(f"chroma heartbeat {url} did not answer within {limit_s:.0f} s")


class ChromaPeer(Peer):
    """Chroma as a server (`chroma run` on 127.0.0.1), queried over HTTP like a deployment.

    `collection.modify(ef_search=…)` is stored at once but the running server keeps the
    HNSW index it loaded (checked: recall does not move), so each operating point restarts
    the server on the same data and waits for its heartbeat again. The HNSW index's
    num_threads is set to 2 with the first point: a single query is one thread anyway,
    and it is what bounds a batched request.
    """

    name, knob, in_process = "chroma", "ef_search", False
    batch_note = f"one HTTP request per 100 queries, HNSW num_threads={BATCH_THREADS}"

    def start_server(self) -> None:
        """Start the bundled server on a fresh loopback port and wait for its heartbeat."""
        chroma = Path(sys.executable).parent / "chroma"
        self.port = free_port()
        if not hasattr(self, "server_log"):
            self.server_log: IO[bytes] = open(self.scratch / "chroma-server.log", "wb")  # noqa: SIM115
        path = self.scratch / "chroma"
        command = [str(chroma), "run", "--path", str(path), "--host", "127.0.0.1"]
        self.server = subprocess.Popen(
            [*command, "--port", str(self.port)],
            stdout=self.server_log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, ANONYMIZED_TELEMETRY="False"),
        )
        url = f"http://127.0.0.1:{self.port}/api/v2/heartbeat"
        log(self.name, f"server up after {wait_heartbeat(url, self.server):.1f} s on {url}")

    def stop_server(self) -> None:
        """Terminate the server (kill after 20 s): it must never outlive the benchmark."""
        server = getattr(self, "server", None)
        if server is not None and server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=20)

    def connect(self, create: bool = False) -> Any:
        """A new HTTP client and collection handle (one per client thread)."""
        import chromadb
        from chromadb.config import Settings

        client = chromadb.HttpClient(
            host="127.0.0.1", port=self.port, settings=Settings(anonymized_telemetry=False)
        )
        if not create:
            return client, client.get_collection("bench", embedding_function=None)
        hnsw = {"space": "ip", "ef_construction": 200, "max_neighbors": 16, "ef_search": 10}
        self.params = {**hnsw, "transport": "HTTP JSON, 127.0.0.1"}
        configuration: Any = {"hnsw": hnsw}
        collection = client.create_collection(
            "bench", embedding_function=None, configuration=configuration
        )
        return client, collection

    def build(self, base: np.ndarray) -> None:
        n, _ = base.shape
        shutil.rmtree(self.scratch / "chroma", ignore_errors=True)
        self.start_server()
        client, self.collection = self.connect(create=True)
        step = min(1000, client.get_max_batch_size())
        self.params["insert_batch"] = step
        for start in range(0, n, step):
            chunk = np.ascontiguousarray(base[start : start + step], np.float32)
            ids = [str(i) for i in range(start, start + len(chunk))]
            self.collection.add(ids=ids, embeddings=chunk)
            if (start // step) % 20 == 19 or start + step >= n:
                log(self.name, f"inserted {min(start + step, n):,}/{n:,}")
        if self.collection.count() != n:
            raise RuntimeError(f"chroma holds {self.collection.count()} of {n} vectors")

    def values(self) -> list[int]:
        return [10, 20, 40, 80, 160, 320, 640]

    def set_point(self, value: int) -> None:
        hnsw = {"ef_search": value, "num_threads": BATCH_THREADS}
        configuration: Any = {"hnsw": hnsw}
        self.collection.modify(configuration=configuration)
        self.stop_server()
        started = time.perf_counter()
        self.start_server()
        _, self.collection = self.connect()
        self.point_extra = {"server_restart_s": round(time.perf_counter() - started, 1)}

    def search_with(self, collection: Any, query: np.ndarray) -> np.ndarray:
        result = collection.query(query_embeddings=query[None], n_results=K, include=[])
        return np.array([int(i) for i in result["ids"][0]], np.int64)

    def search(self, query: np.ndarray) -> np.ndarray:
        return self.search_with(self.collection, query)

    def client(self) -> Search:
        _, collection = self.connect()
        return lambda query: self.search_with(collection, query)

    def batched(self, queries: np.ndarray, seconds: float) -> float:
        def run(q: np.ndarray) -> None:
            for start in range(0, len(q), 100):
                self.collection.query(
                    query_embeddings=q[start : start + 100], n_results=K, include=[]
                )

        return batched_qps(run, queries, seconds)

    def close(self) -> None:
        self.stop_server()
        if hasattr(self, "server_log"):
            self.server_log.close()


PEERS: dict[str, type[Peer]] = {
    "faiss": FaissPeer,
    "faiss-pca256": FaissPcaPeer,
    "scann": ScannPeer,
    "hnswlib": HnswPeer,
    "lancedb": LancePeer,
    "chroma": ChromaPeer,
}


# ------------------------------------------------------------------------------ the worker


def measure_point(peer: Peer, value: int, queries: np.ndarray, gt: np.ndarray, s: float) -> Row:
    """Recall, single-query latency, 8-client QPS and batched QPS at one operating point."""
    peer.set_point(value)
    for query in queries[:20]:  # warm caches and lazily opened files
        peer.search(query)
    found, ms = single_pass(peer.search, queries)
    row: Row = {
        peer.knob: value,
        "recall": round(recall_at_k(found, gt), 4),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
        "qps_1thread": round(1000 / float(ms.mean()), 1),
    }
    row["qps_8threads"] = round(concurrent_qps(peer.client, queries, CLIENT_THREADS, s), 1)
    batched = peer.batched(queries, s)
    row["qps_batched_2threads"] = None if batched is None else round(batched, 1)
    return {**row, **peer.point_extra}


def choose(points: Sequence[Row]) -> Row | None:
    """The deployable point: the highest 8-thread QPS among those with recall ≥ 0.95."""
    good = [p for p in points if p["recall"] >= TARGET]
    return max(good, key=lambda p: p["qps_8threads"]) if good else None


def run_worker(args: argparse.Namespace, emit: Callable[[Row], None]) -> None:
    """Build one system, sweep its knob, emit each point as it is measured."""
    name = args.worker
    base = np.load(args.base, mmap_mode="r")[: args.n]
    queries = np.ascontiguousarray(np.load(args.queries_file)[: args.nq], np.float32)
    gt = np.load(args.gt)[: args.nq]
    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    peer = PEERS[name](scratch)
    try:
        log(name, f"build: n={len(base):,}, d={base.shape[1]}, {cores()} cores")
        started = time.perf_counter()
        peer.build(base)
        build_s = time.perf_counter() - started
        log(name, f"built in {build_s:.1f} s: {peer.params}")
        emit({"event": "built", "build_s": round(build_s, 1), "params": peer.params})
        points: list[Row] = []
        reached = 0
        for value in peer.values():
            row = measure_point(peer, value, queries, gt, args.seconds)
            points.append(row)
            emit({"event": "point", "point": row})
            log(name, "point " + json.dumps(row))
            reached += row["recall"] >= TARGET
            if reached > args.extra_points or row["recall"] >= 0.999:
                break
        if peer.in_process and points:
            chosen = choose(points) or points[-1]
            peer.set_point(chosen[peer.knob])
            emit({"event": "gil", "gil": gil_probe(peer.search, queries)})
        emit({"event": "done"})
    finally:
        peer.close()


def worker_main(args: argparse.Namespace) -> int:
    """Worker entry: events as JSON lines on a private copy of stdout, library chatter to stderr."""
    events = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def emit(event: Row) -> None:
        events.write(json.dumps(event) + "\n")
        events.flush()

    try:
        run_worker(args, emit)
    except Exception as exc:
        import traceback

        emit({"event": "error", "error": f"{type(exc).__name__}: {exc}"})
        traceback.print_exc()
        return 1
    return 0


# ---------------------------------------------------------------------- the orchestrator


def kill_group(proc: subprocess.Popen[str]) -> None:
    """End a worker and everything it started (the Chroma server): its own process group."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 20)):
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def read_lines(stream: IO[str], out: queue.Queue[str | None]) -> None:
    """Forward a worker's event lines to the orchestrator's queue; None marks the end."""
    for line in stream:
        out.put(line)
    out.put(None)


def run_system(name: str, args: argparse.Namespace, data: Row) -> Row:
    """One worker subprocess under the build and sweep deadlines; whatever it said is kept."""
    result: Row = {"status": "error", "n": data["n"], "points": []}
    scratch = args.scratch_root / name
    command = [
        str(scratch_python(args.venv)),
        str(Path(__file__).resolve()),
        "--worker",
        name,
        "--base",
        data["base"],
        "--queries-file",
        data["queries"],
        "--gt",
        data["gt"],
        "--n",
        str(data["n"]),
        "--nq",
        str(data["nq"]),
        "--seconds",
        str(args.seconds),
        "--extra-points",
        str(args.extra_points),
        "--scratch",
        str(scratch),
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(PYTHONUNBUFFERED="1", ANONYMIZED_TELEMETRY="False")
    started = time.perf_counter()
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    lines: queue.Queue[str | None] = queue.Queue()
    assert proc.stdout is not None
    threading.Thread(target=read_lines, args=(proc.stdout, lines), daemon=True).start()
    deadline, phase = started + args.timeout_build_s, "build"
    try:
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                result["status"] = f"{phase} timeout"
                result["error"] = f"{phase} exceeded {deadline - started:.0f} s" + (
                    "; rerun this system with a smaller --n" if phase == "build" else ""
                )
                log("bench", f"{name}: {result['error']}; killing the worker")
                break
            try:
                line = lines.get(timeout=min(left, 5))
            except queue.Empty:
                continue
            if line is None:
                break
            event = json.loads(line)
            if event["event"] == "built":
                result.update(build_s=event["build_s"], params=event["params"])
                deadline, phase = time.perf_counter() + args.timeout_sweep_s, "sweep"
            elif event["event"] == "point":
                result["points"].append(event["point"])
            elif event["event"] == "gil":
                result["gil"] = event["gil"]
            elif event["event"] == "done":
                result["status"] = "ok"
            elif event["event"] == "error":
                result["error"] = event["error"]
    finally:
        kill_group(proc)
    if result["status"] == "error" and "error" not in result:
        result["error"] = f"worker exited with {proc.returncode} without a result (see stderr)"
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    chosen = choose(result["points"])
    result["chosen"] = chosen
    if chosen is None and result["points"]:
        result["chosen_note"] = f"recall {TARGET} not reached"
    result["in_process"] = PEERS[name].in_process
    result["knob"] = PEERS[name].knob
    result["batched_note"] = PEERS[name].batch_note
    return result


def fmt(value: Any, digits: int = 0) -> str:
    """A table cell: numbers rounded, missing values as a dash."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def table(report: Row) -> str:
    """The compact summary: one line per system, its chosen point or why there is none."""
    head = ["system", "status", "n", "build s", "chosen", "recall", "p50 ms", "p99 ms"]
    head += ["QPS x8", "QPS 1thr", "batch QPS x2", "GIL released"]
    rows = [head]
    for name, r in report["systems"].items():
        c = r.get("chosen") or {}
        knob = r.get("knob", "")
        gil = r.get("gil", {})
        gil_cell = "n/a (HTTP)" if not r.get("in_process", True) else fmt(gil.get("releases_gil"))
        best = max((p["recall"] for p in r.get("points", [])), default=None)
        status = r["status"] if c or r["status"] != "ok" else f"max recall {best}"
        rows.append(
            [
                name,
                status,
                fmt(r.get("n")),
                fmt(r.get("build_s"), 1),
                f"{knob}={c[knob]}" if c else r.get("chosen_note", "-"),
                fmt(c.get("recall"), 3),
                fmt(c.get("p50_ms"), 2),
                fmt(c.get("p99_ms"), 2),
                fmt(c.get("qps_8threads")),
                fmt(c.get("qps_1thread")),
                fmt(c.get("qps_batched_2threads")),
                gil_cell,
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows
    )


def main_run(args: argparse.Namespace) -> int:
    """Data, venv, one worker per system, the JSON report (rewritten after each system)."""
    if args.workdir is None:
        raise SystemExit("--workdir is required")
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown:
        raise SystemExit(f"unknown systems {unknown}; choose from {', '.join(SYSTEMS)}")
    args.scratch_root = args.scratch_root or Path(f"/tmp/peers-scratch-{os.getpid()}")
    report: Row = {
        "command": [sys.executable, *sys.argv],
        "machine": machine_info(),
        "settings": {
            "k": K,
            "target_recall": TARGET,
            "client_threads": CLIENT_THREADS,
            "batch_threads": BATCH_THREADS,
            "seconds_per_qps": args.seconds,
            "timeout_build_s": args.timeout_build_s,
        },
    }
    report["data"] = ensure_data(args)
    log("bench", f"data: {report['data']}")
    packages = ["numpy", *(PACKAGE[s] for s in systems)]
    report["install_errors"] = (
        {} if args.skip_install else ensure_venv(args.venv, args.python, packages)
    )
    report["versions"] = peer_versions(args.venv)
    report["systems"] = {}
    if args.merge and args.out is not None and args.out.exists():
        report = merged(json.loads(args.out.read_text()), report)
    try:
        for name in systems:
            if PACKAGE[name] in report["install_errors"]:
                result: Row = {
                    "status": "not installed",
                    "error": report["install_errors"][PACKAGE[name]],
                }
            else:
                log("bench", f"--- {name}")
                result = run_system(name, args, report["data"])
                log("bench", f"{name}: {result['status']}")
            old = report["systems"].get(name)
            key = (
                name
                if old is None or old.get("n") == result.get("n")
                else f"{name} n={result.get('n')}"
            )
            report["systems"][key] = result
            write_report(args.out, report)
    finally:
        shutil.rmtree(args.scratch_root, ignore_errors=True)
    write_report(args.out, report)
    print(table(report), flush=True)
    return 0


def merged(old: Row, new: Row) -> Row:
    """Keep an earlier report's systems (e.g. a build timeout at 1M) beside this run's.

    The earlier run's command and data go to `earlier_runs`; a system measured again at a
    different n is stored under "NAME n=N" so both records stay.
    """
    earlier = old.pop("earlier_runs", [])
    earlier.append({key: old.get(key) for key in ("command", "machine", "data", "versions")})
    return {**new, "systems": old.get("systems", {}), "earlier_runs": earlier}


def write_report(path: Path | None, report: Row) -> None:
    """Write the JSON report; called after every system so a later crash loses nothing."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1) + "\n")


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", type=Path, help="holds base/queries/gt .npy (required)")
    parser.add_argument("--data", choices=["photo-like", "clustered"], default="photo-like")
    parser.add_argument("--dim", type=int, default=1280, help="for --data clustered")
    parser.add_argument("--n", type=int, help="base rows (default: all of base.npy)")
    parser.add_argument("--nq", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0, help="per QPS measurement")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--timeout-build-s", type=float, default=1800)
    parser.add_argument("--timeout-sweep-s", type=float, default=3600)
    parser.add_argument(
        "--extra-points", type=int, default=1, help="points measured past the first ≥ 0.95"
    )
    parser.add_argument("--venv", type=Path, default=Path("/tmp/peers-venv"))
    parser.add_argument("--python", default="python3.11", help="makes the scratch venv")
    parser.add_argument("--skip-install", action="store_true", help="trust the venv as it is")
    parser.add_argument("--scratch-root", type=Path, help="peers' files (default under /tmp)")
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--merge", action="store_true", help="add to --out's systems instead of replacing it"
    )
    # Internal: the worker and Lance's thread-limited child.
    parser.add_argument("--worker", choices=SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    parser.add_argument("--queries-file", help=argparse.SUPPRESS)
    parser.add_argument("--gt", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    parser.add_argument("--lance-batch", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    if args.lance_batch:
        return lance_batch_child(args.lance_batch, args.workdir)
    if args.worker:
        return worker_main(args)
    return main_run(args)


if __name__ == "__main__":
    sys.exit(main())
