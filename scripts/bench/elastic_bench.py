"""Elasticity under load at a larger scale than the tests (issue #5): scaling, a killed
replica, an index update and a rollback, with every answer checked.

    python scripts/bench/elastic_bench.py --n 200000 --dim 256 --workdir /tmp/elastic \
        --out docs/bench/elastic.json --plot docs/img/elastic.png

Each scenario runs a local cluster (`simsearch up --features`, the same shard and router
processes the chart runs) with a steady `POST /search/vector` load (`--rate` per second,
`simsearch.local.loadgen`) for its whole length, and reports: requests sent, failed,
answers with coverage < 1 (flagged / not flagged), seconds back to full coverage after
each step, latency, and how long each change took.

1. scale: 2 → 4 → 1 → 3 shards with `simsearch scale N` (R = 1).
2. kill: R = 2, 3 shards; each shard in turn is SIGKILLed, then `simsearch scale 3`
   restarts it (the StatefulSet controller's job, locally).
3. update: a new version with 10 % new and 1 % removed vectors, written incrementally on
   the live one (template reused: the indexer's path minus the embedding), then
   `simsearch index rollback`. Every answer must hold only ids of the version it names;
   reported: seconds from the flip until every new vector finds itself first, and until
   the rollback is followed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import h5py
import httpx
import numpy as np

from simsearch.common.ids import key_ids
from simsearch.common.layout import IndexLayout
from simsearch.common.storage import open_store
from simsearch.indexer.writer import write_index
from simsearch.local.cluster import ClusterState, alive
from simsearch.local.loadgen import QueryLoad, Sample, recovery_times, summarise


def cli(folder: Path, *args: str) -> float:
    """`simsearch ARGS` in `folder`; seconds it took; raises with its output if it fails."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "simsearch.cli", *args], cwd=folder, capture_output=True, text=True
    )
    if done.returncode:
        raise RuntimeError(
            f"simsearch {' '.join(args)}:\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
        )
    return round(time.perf_counter() - started, 2)


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if check():
            return round(time.monotonic() - started, 2)
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not happen within {timeout_s}s")


def full(url: str, shards: int) -> bool:
    """The router sees `shards` shards, all up, and a complete version."""
    health = httpx.get(f"{url}/health", timeout=5).json()
    counts = health["shards"]
    return bool(health["status"] == "healthy" and counts["up"] == counts["total"] == shards)


def found_first(url: str, id_: int, vector: np.ndarray, version: str) -> bool:
    data = httpx.post(f"{url}/search/vector", json={"vector": vector.tolist(), "k": 3}).json()
    return bool(data["index_version"] == version and data["results"][0]["id"] == id_)


def vectors(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def up(folder: Path, features: Path, port: int, *args: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    cli(folder, "up", "--features", str(features), "--port", str(port), *args)
    return f"http://127.0.0.1:{port}"


def report(samples: list[Sample], steps: list[float]) -> dict[str, Any]:
    out = asdict(summarise(samples))
    out["recovery_s"] = recovery_times(samples, steps) if steps else []
    out["min_coverage"] = min((s.coverage for s in samples if s.ok), default=0.0)
    return out


def scale_scenario(args: argparse.Namespace, features: Path, x: np.ndarray) -> dict[str, Any]:
    folder = args.workdir / "scale"
    url = up(folder, features, args.port, "--shards", "2", "--partitions", str(args.partitions))
    steps: list[float] = []
    took: list[dict[str, float]] = []
    try:
        with QueryLoad(url, x[: args.queries], args.rate) as load:
            time.sleep(3)
            for n in (4, 1, 3):
                steps.append(load.now())
                seconds = cli(folder, "scale", str(n))
                settled = wait_for(lambda n=n: full(url, n), 120, f"{n} shards")  # type: ignore[misc]
                took.append({"shards": n, "scale_command_s": seconds, "then_settled_s": settled})
                time.sleep(3)
        samples = load.samples
    finally:
        cli(folder, "down")
    return {**report(samples, steps), "steps": took, "timeline": timeline(samples, steps)}


def kill_scenario(args: argparse.Namespace, features: Path, x: np.ndarray) -> dict[str, Any]:
    folder = args.workdir / "kill"
    url = up(
        folder, features, args.port + 100, "--shards", "3", "--replication", "2",
        "--partitions", str(args.partitions),
    )  # fmt: skip
    steps: list[float] = []
    rejoin: list[float] = []
    try:
        with QueryLoad(url, x[: args.queries], args.rate) as load:
            time.sleep(3)
            for victim in ClusterState.load(folder / ".simsearch").shards():
                steps.append(load.now())
                os.kill(victim.pid, signal.SIGKILL)
                wait_for(lambda pid=victim.pid: not alive(pid), 10, "exit")  # type: ignore[misc]
                time.sleep(3)
                started = time.monotonic()
                cli(folder, "scale", "3")
                wait_for(lambda: full(url, 3), 120, "rejoin")
                rejoin.append(round(time.monotonic() - started, 2))
                time.sleep(2)
        samples = load.samples
    finally:
        cli(folder, "down")
    return {**report(samples, steps), "restart_to_rejoined_s": rejoin}


def update_scenario(args: argparse.Namespace, features: Path, x: np.ndarray) -> dict[str, Any]:
    folder = args.workdir / "update"
    url = up(
        folder, features, args.port + 200, "--shards", "2", "--partitions", str(args.partitions)
    )
    layout = IndexLayout(open_store(str(folder / ".simsearch" / "store")))
    old = layout.current()
    assert old is not None
    paths = [f"img/{i:07d}.jpg" for i in range(len(x))]
    keep = np.ones(len(x), bool)
    keep[::100] = False  # -1 %
    added = vectors(len(x) // 10, x.shape[1], seed=99)  # +10 %
    new_paths = [p for p, k in zip(paths, keep, strict=True) if k] + [
        f"new/{i:07d}.jpg" for i in range(len(added))
    ]
    new_x = np.concatenate([x[keep], added])
    held = {old: set(key_ids(paths).tolist())}
    try:
        with QueryLoad(url, x[: args.queries], args.rate) as load:
            time.sleep(3)
            step = load.now()
            started = time.perf_counter()
            manifest = write_index(
                layout, key_ids(new_paths), new_x, new_paths, layout.load_manifest(old).model,
                partitions=args.partitions, base=layout.load_manifest(old), source="bench",
            )  # fmt: skip
            write_s = time.perf_counter() - started
            new = manifest.version
            held[new] = set(key_ids(new_paths).tolist())
            flipped = manifest.created.timestamp()
            probe = key_ids(new_paths[-20:])

            def all_found() -> bool:
                return all(
                    found_first(url, int(i), v, new)
                    for i, v in zip(probe, added[-20:], strict=True)
                )

            wait_for(all_found, 120, "new vectors found")
            findable = round(time.time() - flipped, 2)
            rollback_at = load.now()
            cli(folder, "index", "rollback", "--store", str(folder / ".simsearch" / "store"))
            gone_id = int(key_ids([paths[0]])[0])
            followed = wait_for(lambda: found_first(url, gone_id, x[0], old), 120, "rollback")
            time.sleep(3)
        samples = load.samples
    finally:
        cli(folder, "down")
    mixed = sum(1 for s in samples if s.ok and not set(s.ids) <= held[s.version])
    return {
        **report(samples, [step, rollback_at]),
        "write_new_version_s": round(write_s, 1),
        "new_findable_after_flip_s": findable,
        "rollback_followed_s": followed,
        "answers_mixing_versions": mixed,
    }


def timeline(samples: list[Sample], steps: list[float]) -> dict[str, Any]:
    """Per-request series for the plot (send time, latency, coverage) and the steps."""
    return {
        "sent": [round(s.sent, 3) for s in samples],
        "latency_ms": [round(s.latency_ms, 1) for s in samples],
        "coverage": [s.coverage if s.ok else -1.0 for s in samples],
        "steps": [round(t, 2) for t in steps],
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    line = result["scale"]["timeline"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
    top.plot(line["sent"], line["latency_ms"], ".", markersize=2)
    top.set_ylabel("latency (ms)")
    top.set_yscale("log")
    bottom.plot(line["sent"], line["coverage"], ".", markersize=2)
    bottom.set_ylabel("coverage")
    bottom.set_ylim(-0.1, 1.1)
    bottom.set_xlabel("seconds")
    for t, label in zip(line["steps"], ("→4", "→1", "→3"), strict=False):
        for ax in (top, bottom):
            ax.axvline(t, color="grey", linestyle="--")
        top.annotate(label, (t, 1), xycoords=("data", "axes fraction"), va="bottom")
    summary = result["scale"]
    fig.suptitle(
        f"simsearch scale 2→4→1→3 under {result['rate']:.0f} q/s, {result['n']:,} vectors: "
        f"{summary['failed']} failed of {summary['sent']}, min coverage {summary['min_coverage']}"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--partitions", type=int, default=64)
    parser.add_argument("--rate", type=float, default=40.0)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--port", type=int, default=19100)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--only", choices=["scale", "kill", "update"], action="append")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    x = vectors(args.n, args.dim, seed=0)
    features = args.workdir / "features.h5"
    with h5py.File(features, "w") as h5:
        h5["features"] = x
        h5["paths"] = np.array([f"img/{i:07d}.jpg" for i in range(args.n)], dtype="S")
    result: dict[str, Any] = {"n": args.n, "dim": args.dim, "rate": args.rate}
    scenarios = {"scale": scale_scenario, "kill": kill_scenario, "update": update_scenario}
    for name in args.only or list(scenarios):
        result[name] = scenarios[name](args, features, x)
        brief = {k: v for k, v in result[name].items() if k != "timeline"}
        print(name, json.dumps(brief), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    if args.plot and "scale" in result:
        plot(result, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
