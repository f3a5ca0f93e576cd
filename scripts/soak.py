"""Soak: mixed image and vector searches on a running local cluster, every answer checked.

    make demo        # or: simsearch up --shards 2
    python scripts/soak.py --minutes 20 --concurrency 16 \
        --out docs/bench/soak.json --plot docs/img/soak.png

Why: the fault tests show that one fault is survived; a soak shows that nothing degrades
over time under steady load: no error ever (every answer is a complete 200), latency that
stays where it started, and resident memory of every process that stays flat once warm
(a leak of 1 MB/min is 1.4 GB a day). `--concurrency` clients loop back to back; each
request is an image upload (`--image-share` of them, the bundled photos) or a vector query
(unit vectors of the index's dimension). The RSS of every process in the cluster's
`state.json` is read every `--sample-s` seconds from /proc. The verdict: 0 errors and, for
every process, an RSS slope below `--max-slope-mb-min` after `--warmup-min`, fitted by
least squares.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples" / "flowers" / "images"


@dataclass
class Tally:
    """What the clients saw, per minute of the run."""

    latencies: dict[tuple[int, str], list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    requests: int = 0

    def add(self, minute: int, kind: str, ms: float) -> None:
        self.latencies.setdefault((minute, kind), []).append(ms)
        self.requests += 1


def rss_kb(pid: int) -> int | None:
    """Resident memory of a process (None if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def processes(folder: Path) -> dict[str, int]:
    """Role → pid of the local cluster (its `state.json`), the supervisor included."""
    state = json.loads((folder / "state.json").read_text())
    found = {p["role"]: p["pid"] for p in state["processes"]}
    if state.get("supervisor_pid"):
        found["supervisor"] = state["supervisor_pid"]
    return found


def check(kind: str, status: int, body: bytes) -> str | None:
    """None for a complete answer; else what was wrong with it."""
    if status != 200:
        return f"{kind} HTTP {status}: {body[:200]!r}"
    data = json.loads(body)
    if data.get("partial") or data.get("coverage") != 1.0 or not data.get("results"):
        return f"{kind} incomplete answer: coverage {data.get('coverage')}"
    return None


async def client(
    session: aiohttp.ClientSession,
    url: str,
    dim: int,
    photos: list[bytes],
    share: float,
    deadline: float,
    started: float,
    tally: Tally,
    bar: tqdm[Any],
    seed: int,
) -> None:
    rng = random.Random(seed)
    vectors = np.random.default_rng(seed).standard_normal((64, dim)).astype(np.float32)
    while time.monotonic() < deadline:
        image = rng.random() < share
        begun = time.monotonic()
        try:
            if image:
                form = aiohttp.FormData()
                form.add_field("file", rng.choice(photos), filename="q.jpg")
                reply = await session.post(f"{url}/search/image", data=form)
            else:
                vector = vectors[rng.randrange(len(vectors))].tolist()
                reply = await session.post(f"{url}/search/vector", json={"vector": vector})
            async with reply:
                problem = check("image" if image else "vector", reply.status, await reply.read())
        except (aiohttp.ClientError, TimeoutError) as exc:
            problem = f"{'image' if image else 'vector'} {type(exc).__name__}: {exc}"
        ms = (time.monotonic() - begun) * 1000
        tally.add(int((begun - started) // 60), "image" if image else "vector", ms)
        if problem is not None:
            tally.errors.append(problem)
        bar.update(1)


async def sample_memory(
    pids: dict[str, int], every_s: float, deadline: float, started: float
) -> dict[str, list[tuple[float, int]]]:
    out: dict[str, list[tuple[float, int]]] = {role: [] for role in pids}
    while time.monotonic() < deadline:
        now = (time.monotonic() - started) / 60
        for role, pid in pids.items():
            kb = rss_kb(pid)
            if kb is not None:
                out[role].append((now, kb))
        await asyncio.sleep(every_s)
    return out


def slope_mb_per_min(points: list[tuple[float, int]], warmup_min: float) -> float | None:
    """Least-squares RSS slope after the warm-up (None with too few points)."""
    warm = [(t, kb) for t, kb in points if t >= warmup_min]
    if len(warm) < 3:
        return None
    t, kb = np.array(warm, dtype=np.float64).T
    return float(np.polyfit(t, kb / 1024, 1)[0])


async def run(args: argparse.Namespace) -> dict[str, Any]:
    pids = processes(args.folder)
    photos = [p.read_bytes() for p in sorted(args.images.glob("*/*.jpg"))[:200]]
    started = time.monotonic()
    deadline = started + args.minutes * 60
    tally = Tally()
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.get(f"{args.url}/stats") as reply:
            dim = int((await reply.json())["dim"])
        with tqdm(desc="soak", unit="req", total=None, smoothing=0.1) as bar:
            memory_task = asyncio.create_task(sample_memory(pids, args.sample_s, deadline, started))
            await asyncio.gather(
                *(
                    client(session, args.url, dim, photos, args.image_share, deadline, started,
                           tally, bar, seed)
                    for seed in range(args.concurrency)
                )
            )  # fmt: skip
            memory = await memory_task
    return report(args, tally, memory, pids)


def report(
    args: argparse.Namespace,
    tally: Tally,
    memory: dict[str, list[tuple[float, int]]],
    pids: dict[str, int],
) -> dict[str, Any]:
    minutes = []
    for minute in range(int(args.minutes + 0.999)):
        row: dict[str, Any] = {"minute": minute}
        for kind in ("vector", "image"):
            values = tally.latencies.get((minute, kind), [])
            if values:
                row[kind] = {
                    "n": len(values),
                    "p50_ms": round(float(np.percentile(values, 50)), 2),
                    "p99_ms": round(float(np.percentile(values, 99)), 2),
                }
        minutes.append(row)
    slopes = {role: slope_mb_per_min(points, args.warmup_min) for role, points in memory.items()}
    gone = [role for role, pid in pids.items() if rss_kb(pid) is None]
    flat = all(s is not None and s < args.max_slope_mb_min for s in slopes.values())
    return {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "minutes": args.minutes,
        "concurrency": args.concurrency,
        "image_share": args.image_share,
        "requests": tally.requests,
        "errors": len(tally.errors),
        "first_errors": tally.errors[:10],
        "processes_gone": gone,
        "rss_slope_mb_per_min": {r: None if s is None else round(s, 3) for r, s in slopes.items()},
        "rss_mb_first_last": {
            role: [round(points[0][1] / 1024, 1), round(points[-1][1] / 1024, 1)]
            for role, points in memory.items()
            if points
        },
        "per_minute": minutes,
        "memory": {role: points for role, points in memory.items()},
        "passed": not tally.errors and not gone and flat,
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (lat, mem) = plt.subplots(1, 2, figsize=(12, 4.2))
    for kind, colour in (("vector", "tab:blue"), ("image", "tab:orange")):
        rows = [r for r in result["per_minute"] if kind in r]
        t = [r["minute"] + 0.5 for r in rows]
        lat.plot(t, [r[kind]["p50_ms"] for r in rows], "-o", color=colour, label=f"{kind} p50")
        lat.plot(t, [r[kind]["p99_ms"] for r in rows], "--", color=colour, label=f"{kind} p99")
    lat.set(xlabel="minute", ylabel="latency (ms)", yscale="log", title="Latency per minute")
    lat.legend(fontsize=8)
    for role, points in result["memory"].items():
        if points:
            t, kb = zip(*points, strict=True)
            slope = result["rss_slope_mb_per_min"][role]
            mem.plot(t, np.array(kb) / 1024, label=f"{role} ({slope} MB/min)")
    mem.axvline(result.get("warmup_min", 3), color="grey", lw=0.8, ls=":")
    mem.set(xlabel="minute", ylabel="RSS (MB)", title="Resident memory per process")
    mem.legend(fontsize=7)
    verdict = "passed" if result["passed"] else "FAILED"
    fig.suptitle(
        f"Soak: {result['requests']} requests at concurrency {result['concurrency']}, "
        f"{result['errors']} errors — {verdict}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--folder", type=Path, default=Path(".simsearch"))
    parser.add_argument("--images", type=Path, default=SAMPLES)
    parser.add_argument("--minutes", type=float, default=20)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--image-share", type=float, default=0.2)
    parser.add_argument("--sample-s", type=float, default=10)
    parser.add_argument("--warmup-min", type=float, default=3)
    parser.add_argument("--max-slope-mb-min", type=float, default=1.0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    result["warmup_min"] = args.warmup_min
    summary = {k: v for k, v in result.items() if k not in ("memory", "per_minute")}
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    if args.plot:
        plot(result, args.plot)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
