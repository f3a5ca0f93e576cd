"""Embedder throughput: HTTP service vs. the raw batched model, measured in one run.

1. raw: the same engine in this process, batches of `--batch` preprocessed images,
   `--threads` torch threads: the ceiling the service can reach.
2. http: `simsearch serve embedder` as a subprocess with the same batch size and threads;
   `--clients` concurrent clients (threads with keep-alive connections) each send single
   JPEGs (the shipped sample photos) for `--seconds`.
The service figure includes HTTP, multipart parsing, decoding and preprocessing; the raw
one does not. Decode share = decode+preprocess seconds / (that + forward seconds), from
the service's own Prometheus histograms.

    python scripts/bench/embed_throughput.py --batch 4 8 --threads 2 --clients 8
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simsearch.common.imaging import decode_image
from simsearch.models.device import resolve_placement
from simsearch.models.engine import Engine, preprocess
from simsearch.models.registry import get_spec, load_model

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples" / "flowers" / "images"


def load_jpegs(limit: int) -> list[bytes]:
    """The shipped sample photos (real JPEGs of ~227x227)."""
    return [p.read_bytes() for p in sorted(SAMPLES.glob("*/*.jpg"))[:limit]]


def raw_throughput(engine: Engine, arrays: list[np.ndarray], batch: int, seconds: float) -> float:
    """Images/s of `engine.embed` on ready-made batches (no decoding, no HTTP)."""
    batches = [arrays[i : i + batch] for i in range(0, len(arrays) - batch + 1, batch)]
    engine.embed(batches[0])
    done, started, i = 0, time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        engine.embed(batches[i % len(batches)])
        done += batch
        i += 1
    return done / (time.perf_counter() - started)


def decode_ms(engine: Engine, jpegs: list[bytes]) -> float:
    """Mean single-thread decode + preprocess time per image, in ms."""
    started = time.perf_counter()
    for blob in jpegs:
        preprocess(decode_image(blob), engine.spec.preprocessing)
    return 1000 * (time.perf_counter() - started) / len(jpegs)


def multipart(blob: bytes) -> tuple[bytes, str]:
    """One `file` part, encoded once up front so the client spends no CPU on it later."""
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="q.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    return head + blob + f"\r\n--{boundary}--\r\n".encode(), boundary


def client_loop(port: int, bodies: list[tuple[bytes, str]], stop: float, out: list[float]) -> None:
    """One client: a keep-alive connection sending one image per request until `stop`."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    i = 0
    while time.perf_counter() < stop:
        body, boundary = bodies[i % len(bodies)]
        sent = time.perf_counter()
        conn.request(
            "POST",
            "/embed?encoding=base64",
            body,
            {"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}")
        out.append(time.perf_counter() - sent)
        i += 1
    conn.close()


def scrape(port: int) -> dict[str, float]:
    """The service's decode and inference totals from /metrics."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    wanted = (
        "simsearch_embedder_decode_seconds_sum",
        "simsearch_embedder_inference_seconds_sum",
        "simsearch_embedder_images_total",
        "simsearch_embedder_batch_size_count",
    )
    return {
        ln.split()[0]: float(ln.split()[1]) for ln in text.splitlines() if ln.startswith(wanted)
    }


def start_server(port: int, batch: int, threads: int, wait_ms: float) -> subprocess.Popen[bytes]:
    """The real service, as a user would start it, on loopback."""
    env = {
        **os.environ,
        "SIMSEARCH_PORT": str(port),
        "SIMSEARCH_MAX_BATCH": str(batch),
        "SIMSEARCH_TORCH_THREADS": str(threads),
        "SIMSEARCH_MAX_WAIT_MS": str(wait_ms),
        "SIMSEARCH_LOG_LEVEL": "warning",
    }
    log = open(Path(tempfile.gettempdir()) / "embed-bench-server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "simsearch.cli", "serve", "embedder"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health/ready")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            pass
        if proc.poll() is not None:
            raise RuntimeError("embedder exited; see embed-bench-server.log")
        time.sleep(0.2)
    raise TimeoutError("embedder not ready")


def http_throughput(port: int, jpegs: list[bytes], clients: int, seconds: float) -> dict[str, Any]:
    """Images/s and latency with `clients` concurrent single-image clients."""
    bodies = [multipart(blob) for blob in jpegs]
    warm: list[float] = []
    client_loop(port, bodies[:4], time.perf_counter() + 1.0, warm)
    before = scrape(port)
    latencies: list[list[float]] = [[] for _ in range(clients)]
    stop = time.perf_counter() + seconds
    started = time.perf_counter()
    workers = [
        threading.Thread(target=client_loop, args=(port, bodies[c::clients], stop, latencies[c]))
        for c in range(clients)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - started
    after = scrape(port)
    delta = {k: after[k] - before.get(k, 0.0) for k in after}
    flat = np.array([x for lat in latencies for x in lat])
    decode_s = delta["simsearch_embedder_decode_seconds_sum"]
    infer_s = delta["simsearch_embedder_inference_seconds_sum"]
    return {
        "images_per_s": len(flat) / elapsed,
        "requests": len(flat),
        "p50_ms": float(np.percentile(flat, 50) * 1000),
        "p99_ms": float(np.percentile(flat, 99) * 1000),
        "mean_batch": delta["simsearch_embedder_images_total"]
        / max(1.0, delta["simsearch_embedder_batch_size_count"]),
        "decode_ms_per_image": 1000 * decode_s / max(1, len(flat)),
        "decode_share": decode_s / max(1e-9, decode_s + infer_s),
        "infer_ms_per_image": 1000 * infer_s / max(1, len(flat)),
        "model_busy_share": infer_s / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--wait-ms", type=float, default=20.0)
    parser.add_argument("--port", type=int, default=18765)
    parser.add_argument("--repeat", type=int, default=1, help="alternate raw/http N times")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    spec = get_spec("efficientnet-lite0")
    module, weights = load_model(spec, None)
    engine = Engine(spec, module, resolve_placement("cpu", "auto"), weights)
    jpegs = load_jpegs(200)
    arrays = [preprocess(decode_image(b), spec.preprocessing) for b in jpegs[:64]]
    results: dict[str, Any] = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": args.threads,
        "clients": args.clients,
        "decode_ms_single_thread": decode_ms(engine, jpegs[:100]),
        "runs": [],
    }
    for batch in args.batch:
        server = start_server(args.port, batch, args.threads, args.wait_ms)
        try:
            for _ in range(args.repeat):  # alternate: this host's speed drifts by ±30 %
                raw = raw_throughput(engine, arrays, batch, args.seconds / 2)
                served = http_throughput(args.port, jpegs, args.clients, args.seconds)
                raw_after = raw_throughput(engine, arrays, batch, args.seconds / 2)
                run = {
                    "batch": batch,
                    "raw_images_per_s": (raw + raw_after) / 2,
                    "raw_before": raw,
                    "raw_after": raw_after,
                    **served,
                }
                run["ratio"] = run["images_per_s"] / run["raw_images_per_s"]
                results["runs"].append(run)
                print(json.dumps(run, indent=None, default=float), flush=True)
        finally:
            server.terminate()
            server.wait(timeout=20)
    for batch in args.batch:
        ratios = sorted(r["ratio"] for r in results["runs"] if r["batch"] == batch)
        results.setdefault("median_ratio", {})[batch] = ratios[len(ratios) // 2]
    print("median HTTP/raw ratio by batch:", results["median_ratio"])
    if args.out:
        args.out.write_text(json.dumps(results, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
