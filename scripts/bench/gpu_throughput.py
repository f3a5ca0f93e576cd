"""GPU embedder throughput: ResNet50 (fp16 autocast, channels_last) at batch 64/128/256.

Runs the project's own engine (`simsearch.models.engine.Engine`) unchanged on CUDA:
- `model`: pre-decoded images, the forward pass alone (host→device copy included);
- `pipeline`: decode + preprocess of real JPEGs in a thread pool, overlapped with the
  GPU, batches handed to the engine as they fill: the images/s an indexer sees;
- `http` (optional, --http): the real service (`simsearch serve embedder`) on the GPU,
  clients posting `/embed/keys` with `file://` keys, so fetching, decoding, batching,
  HTTP and JSON are all in the figure.
Random weights are fine for a throughput figure (`--weights random`).

    python scripts/bench/gpu_throughput.py --model resnet50 --batch 64 128 256 --http
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import platform
import subprocess
import sys
import threading
import time
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simsearch.common.imaging import decode_image
from simsearch.common.wire import Preprocessing
from simsearch.models.device import resolve_placement
from simsearch.models.engine import Engine, preprocess
from simsearch.models.registry import get_spec, load_model

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples" / "flowers" / "images"


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def model_only(engine: Engine, arrays: list[np.ndarray], batch: int, seconds: float) -> float:
    """Images/s of engine.embed on pre-decoded uint8 batches."""
    chunk = (arrays * (batch // len(arrays) + 1))[:batch]
    engine.embed(chunk)
    sync()
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        engine.embed(chunk)
        done += batch
    sync()
    return done / (time.perf_counter() - started)


def _prep(blob: bytes, pre: Preprocessing) -> np.ndarray:
    return preprocess(decode_image(blob), pre)


def decode_ms(jpegs: list[bytes], pre: Preprocessing) -> float:
    """Single-thread decode + preprocess time per image on this machine's CPU."""
    started = time.perf_counter()
    for blob in jpegs:
        _prep(blob, pre)
    return 1000 * (time.perf_counter() - started) / len(jpegs)


def pipeline(
    engine: Engine, jpegs: list[bytes], batch: int, pool: Executor, seconds: float
) -> float:
    """Images/s with decoding in `pool` overlapped with the GPU (3 batches ahead)."""
    pre = engine.spec.preprocessing
    cursor = 0

    def submit() -> list[Future[np.ndarray]]:
        nonlocal cursor
        futures = [pool.submit(_prep, jpegs[(cursor + i) % len(jpegs)], pre) for i in range(batch)]
        cursor += batch
        return futures

    ahead: collections.deque[list[Future[np.ndarray]]] = collections.deque(
        submit() for _ in range(3)
    )
    engine.embed([f.result() for f in ahead.popleft()])
    ahead.append(submit())
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        arrays = [f.result() for f in ahead.popleft()]
        ahead.append(submit())
        engine.embed(arrays)
        done += batch
    sync()
    elapsed = time.perf_counter() - started
    for futures in ahead:
        for future in futures:
            future.result()
    return done / elapsed


def http_run(model: str, weights: str, batch: int, workers: int, seconds: float) -> dict[str, Any]:
    """The real service on the GPU; 8 clients post /embed/keys with 256 file:// keys each."""
    port = 18901
    env = {
        **os.environ,
        "SIMSEARCH_PORT": str(port),
        "SIMSEARCH_MODEL": model,
        "SIMSEARCH_WEIGHTS": weights,
        "SIMSEARCH_MAX_BATCH": str(batch),
        "SIMSEARCH_MAX_WAIT_MS": "10",
        "SIMSEARCH_DECODE_WORKERS": str(workers),
        "SIMSEARCH_FETCH_WORKERS": str(workers),
        "SIMSEARCH_LOG_LEVEL": "warning",
        "SIMSEARCH_MAX_FILES": "1024",
        "SIMSEARCH_QUEUE_LIMIT": "8192",
        "SIMSEARCH_ALLOWED_ROOTS": SAMPLES.resolve().as_uri(),  # /embed/keys reads only here
    }
    proc = subprocess.Popen([sys.executable, "-m", "simsearch.cli", "serve", "embedder"], env=env)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/health/ready")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("embedder did not become ready")
            time.sleep(0.5)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/info")
        info = json.loads(conn.getresponse().read())
        keys = [p.resolve().as_uri() for p in sorted(SAMPLES.glob("*/*.jpg"))]
        counts = [0] * 8

        def client(c: int, stop: float) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            i = c * 256
            while time.perf_counter() < stop:
                chunk = [keys[(i + j) % len(keys)] for j in range(256)]
                body = json.dumps({"keys": chunk, "encoding": "base64"})
                conn.request("POST", "/embed/keys", body, {"Content-Type": "application/json"})
                reply = json.loads(conn.getresponse().read())
                if reply.get("errors"):
                    raise RuntimeError(reply["errors"][:2])
                counts[c] += reply["count"]
                i += 256

        warm_stop = time.perf_counter() + 3
        client(0, warm_stop)
        counts[0] = 0
        stop = time.perf_counter() + seconds
        started = time.perf_counter()
        threads = [threading.Thread(target=client, args=(c, stop)) for c in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return {
            "batch": batch,
            "images_per_s": sum(counts) / (time.perf_counter() - started),
            "device": info["device"],
            "precision": info["precision"],
        }
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--weights", default=None, help="None = the model's pretrained weights")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--http", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    spec = get_spec(args.model)
    module, weights = load_model(spec, args.weights)
    placement = resolve_placement(args.device, "auto")
    engine = Engine(spec, module, placement, weights)
    jpegs = [p.read_bytes() for p in sorted(SAMPLES.glob("*/*.jpg"))]
    arrays = [preprocess(decode_image(b), spec.preprocessing) for b in jpegs[:256]]
    engine.warm_up([8, *args.batch])
    result: dict[str, Any] = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "model": spec.name,
        "weights": weights,
        "device": str(placement.device),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "precision": placement.precision,
        "channels_last": placement.channels_last,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_cores": os.cpu_count(),
        "decode_workers": args.workers,
        "image_size": "227x227 JPEG (samples/flowers)",
        "runs": [],
        "decode_ms_single_thread": decode_ms(jpegs[:200], spec.preprocessing),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}), flush=True)
    threads = ThreadPoolExecutor(args.workers)
    processes = ProcessPoolExecutor(args.workers)
    list(processes.map(_prep, jpegs[:64], [spec.preprocessing] * 64))  # start the workers
    for batch in args.batch:
        run = {
            "batch": batch,
            "model_images_per_s": model_only(engine, arrays, batch, args.seconds),
            "pipeline_threads_images_per_s": pipeline(engine, jpegs, batch, threads, args.seconds),
            "pipeline_processes_images_per_s": pipeline(
                engine, jpegs, batch, processes, args.seconds
            ),
        }
        result["runs"].append(run)
        print(json.dumps(run), flush=True)
    threads.shutdown()
    processes.shutdown()
    if args.http:
        del engine, module
        torch.cuda.empty_cache()
        result["http"] = http_run(
            args.model, args.weights, max(args.batch[:2]), args.workers, args.seconds * 2
        )
        print(json.dumps(result["http"]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
