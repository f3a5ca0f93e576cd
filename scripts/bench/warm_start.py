"""How long shards take to be ready from a warm local cache (issue #3, acceptance 4).

    python scripts/bench/warm_start.py --workdir /tmp/sb1m --shards 2 --runs 3

Uses the store and caches `search_bench.py` left in `--workdir` (its `store/` and
`cache-<s>/` folders). Each run starts the shard processes (`simsearch serve shard`) on
the same caches, times start → `/health/ready` of the slowest one, and stops them (with
`--each`, also every shard started alone: the time one pod restart takes). The
first run may hash files that carry no verification stamp yet (caches written before
stamps existed); later runs show the restart a pod sees. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx


def start(workdir: Path, ordinal: int, shards: int, port: int) -> subprocess.Popen[bytes]:
    """One shard process on its own cache folder, logging to workdir/logs."""
    env = {
        **os.environ,
        "SIMSEARCH_HOST": "127.0.0.1",
        "SIMSEARCH_PORT": str(port),
        "SIMSEARCH_STORE": str(workdir / "store"),
        "SIMSEARCH_SHARD_ORDINAL": str(ordinal),
        "SIMSEARCH_REPLICAS": str(shards),
        "SIMSEARCH_CACHE_DIR": str(workdir / f"cache-{ordinal}"),
    }
    (workdir / "logs").mkdir(exist_ok=True)
    with (workdir / "logs" / f"warm-shard-{ordinal}.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "simsearch.cli", "serve", "shard"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def ready_after(ports: list[int], started: float, timeout_s: float) -> float:
    """Seconds from `started` until every port answers /health/ready with 200."""
    waiting = set(ports)
    with httpx.Client(timeout=2.0) as client:
        while waiting and time.perf_counter() - started < timeout_s:
            for port in list(waiting):
                try:
                    if client.get(f"http://127.0.0.1:{port}/health/ready").status_code == 200:
                        waiting.discard(port)
                except httpx.TransportError:
                    pass
            time.sleep(0.05)
    if waiting:
        raise TimeoutError(f"shards on {sorted(waiting)} not ready after {timeout_s}s")
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--port", type=int, default=18950)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--each", action="store_true", help="also start each shard alone")
    args = parser.parse_args()
    ports = [args.port + s for s in range(args.shards)]
    together = [timed(args, list(enumerate(ports))) for _ in range(args.runs)]
    result: dict[str, object] = {"shards": args.shards, "ready_s_all_together": together}
    if args.each:
        result["ready_s_alone"] = {
            s: [timed(args, [(s, port)]) for _ in range(args.runs)] for s, port in enumerate(ports)
        }
    print(json.dumps(result))
    return 0


def timed(args: argparse.Namespace, shards: list[tuple[int, int]]) -> float:
    """Start these (ordinal, port) shards, time until all are ready, stop them."""
    started = time.perf_counter()
    procs = [start(args.workdir, s, args.shards, port) for s, port in shards]
    try:
        return round(ready_after([port for _, port in shards], started, args.timeout), 2)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    sys.exit(main())
