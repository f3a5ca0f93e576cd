"""Filtered search at scale: correctness, recall and latency per selectivity, through the client.

Takes the index `search_bench.py --save-vectors` built in WORKDIR (base.npy, queries.npy, the
store), publishes a new version of it whose partitions carry synthetic metadata (`bucket`,
an int uniform over 0..999, independent of the vectors; `tag`, a string of 10 values),
starts 2 shards and a router, and asks every query through `simsearch.client` with filters
of selectivity 50 %, 10 %, 1 % and 0.1 % (`bucket < 500`, ... `bucket == 0`), plus one
compound filter (`tag in [...] and not bucket < 500`) and no filter at all, in the same run.

Per filter it reports:
- `violations`: results that do not satisfy the filter (must be 0);
- recall@10 against a brute-force *filtered* exact search (every vector that satisfies the
  filter scored against the query), in the raw model space and in the index's scoring space;
- p50/p99 latency at one client, and which path the shards took (from their metrics).

    python scripts/bench/search_bench.py --n 100000 --data photo-like --save-vectors \\
        --workdir /tmp/sb100k
    python scripts/bench/filter_bench.py --workdir /tmp/sb100k --out docs/bench/filters_100k.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from search_bench import spawn, wait_ready

from simsearch.client import Client
from simsearch.common.features import open_features
from simsearch.common.ids import key_ids
from simsearch.common.layout import IndexLayout
from simsearch.common.manifest import Manifest, new_version_id
from simsearch.common.metadata import BUILTIN_FIELDS, FieldType
from simsearch.common.metatable import METADATA_FILE, build_table, write_table
from simsearch.common.storage import open_store

K = 10
TAGS = [f"t{i}" for i in range(10)]
SCHEMA: dict[str, FieldType] = {**BUILTIN_FIELDS, "bucket": "int", "tag": "string"}
FILTERS: dict[str, dict[str, Any] | None] = {
    "none": None,
    "50%": {"field": "bucket", "range": {"lt": 500}},
    "10%": {"field": "bucket", "range": {"lt": 100}},
    "1%": {"field": "bucket", "range": {"lt": 10}},
    "0.1%": {"field": "bucket", "eq": 0},
    "compound 15%": {
        "and": [
            {"field": "tag", "in": ["t1", "t2", "t3"]},
            {"not": {"field": "bucket", "range": {"lt": 500}}},
        ]
    },
}


def synthetic(n: int) -> dict[str, np.ndarray]:
    """Metadata independent of the vectors: the hard case for a filter inside IVF."""
    rng = np.random.default_rng(7)
    return {"bucket": rng.integers(0, 1000, n), "tag": rng.integers(0, len(TAGS), n)}


def selected(meta: dict[str, np.ndarray], spec: dict[str, Any] | None) -> np.ndarray:
    """The rows satisfying each filter of FILTERS (written out, not via the code under test)."""
    bucket, tag = meta["bucket"], meta["tag"]
    if spec is None:
        return np.ones(len(bucket), bool)
    if "and" in spec:
        return np.isin(tag, [1, 2, 3]) & ~(bucket < 500)
    if "eq" in spec:
        return bucket == spec["eq"]
    return bucket < spec["range"]["lt"]


def publish_with_metadata(layout: IndexLayout, meta: dict[str, np.ndarray], ids: np.ndarray) -> str:
    """A new version: the live one's files plus a metadata.arrow per partition."""
    live = layout.load_manifest()
    row_of = {int(i): r for r, i in enumerate(ids)}
    version = new_version_id()
    parts = []
    with tempfile.TemporaryDirectory() as tmp:
        for info in live.partition_files:
            local = Path(tmp) / f"{info.partition}.h5"
            layout.store.download_file(layout.resolve(info.features), local)
            feats = open_features(local)
            rows = [row_of[int(i)] for i in feats.ids]
            metadata = [
                {
                    "key": f"synthetic/{r:08d}.jpg",
                    "size": 1000 + r,
                    "mtime": None,
                    "content_type": "image/jpeg",
                    "bucket": int(meta["bucket"][r]),
                    "tag": TAGS[int(meta["tag"][r])],
                }
                for r in rows
            ]
            path = Path(tmp) / f"{info.partition}.arrow"
            write_table(build_table(feats.ids, metadata, SCHEMA), path)
            ref = layout.upload(
                version, layout.partition_relative(info.partition, METADATA_FILE), path
            )
            parts.append(info.model_copy(update={"metadata": ref}))
    manifest = Manifest.model_validate(
        {
            **live.model_dump(),
            "version": version,
            "parent": live.version,
            "partition_files": [p.model_dump() for p in parts],
            "metadata": SCHEMA,
        }
    )
    layout.publish(manifest)
    return version


def exact_filtered(space: np.ndarray, q: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Row numbers of the exact top K among the rows of `mask`, per query."""
    rows = np.flatnonzero(mask)
    scores = q @ space[rows].T
    top = np.argsort(-scores, axis=1)[:, :K]
    return rows[top]


def run_filter(
    client: Client, q: np.ndarray, spec: dict[str, Any] | None, collection: str | None
) -> tuple[list[list[int]], list[float]]:
    """Every query once through the client: result ids and latencies (s)."""
    found, times = [], []
    for row in q:
        started = time.perf_counter()
        answer = client.search_vector(row.tolist(), k=K, filter=spec, collection=collection)
        times.append(time.perf_counter() - started)
        found.append([hit.id for hit in answer.results])
    return found, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--port", type=int, default=18900)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    x = np.load(args.workdir / "base.npy", mmap_mode="r")
    q = np.load(args.workdir / "queries.npy")[: args.queries]
    n = len(x)
    ids = key_ids([f"synthetic/{i:08d}.jpg" for i in range(n)])
    meta = synthetic(n)
    store_dir = args.workdir / "store"
    layout = IndexLayout(open_store(str(store_dir)))
    version = publish_with_metadata(layout, meta, ids)
    from simsearch.common.ann import Template

    manifest = layout.load_manifest()
    template = Template.read(str(store_dir / "index" / "default" / manifest.trained.key))
    xs = np.ascontiguousarray(x, dtype=np.float32)
    ys = template.project(xs)
    qs = template.project(np.ascontiguousarray(q, dtype=np.float32))
    result: dict[str, Any] = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "n": n,
        "queries": len(q),
        "version": version,
        "cores": os.cpu_count(),
        "filters": {},
    }
    logs = args.workdir / "logs-filter"
    logs.mkdir(parents=True, exist_ok=True)
    shard_ports = [args.port + 1, args.port + 2]
    shards = [
        spawn(
            "shard",
            port,
            {
                "SIMSEARCH_STORE": str(store_dir),
                "SIMSEARCH_SHARD_ORDINAL": str(s),
                "SIMSEARCH_REPLICAS": "2",
                "SIMSEARCH_CACHE_DIR": str(args.workdir / f"fcache-{s}"),
            },
            logs / f"shard-{s}.log",
        )
        for s, port in enumerate(shard_ports)
    ]
    for port in shard_ports:
        wait_ready(port)
    router = spawn(
        "router",
        args.port,
        {
            "SIMSEARCH_SHARDS": ",".join(f"http://127.0.0.1:{p}" for p in shard_ports),
            "SIMSEARCH_TIMEOUT_MS": "30000",
        },
        logs / "router.log",
    )
    try:
        wait_ready(args.port)
        with Client(f"http://127.0.0.1:{args.port}") as client:
            run_filter(client, q[:50], None, None)  # warm-up
            for name, spec in FILTERS.items():
                result["filters"][name] = measure(client, q, qs, xs, ys, ids, meta, spec)
                print(name, json.dumps(result["filters"][name]), flush=True)
    finally:
        for proc in [router, *shards]:
            proc.terminate()
            proc.wait(timeout=30)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


def measure(
    client: Client,
    q: np.ndarray,
    qs: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    ids: np.ndarray,
    meta: dict[str, np.ndarray],
    spec: dict[str, Any] | None,
) -> dict[str, Any]:
    """One filter's figures (see the module docstring)."""
    mask = selected(meta, spec)
    found, times = run_filter(client, q, spec, None)
    row_of = {int(i): r for r, i in enumerate(ids)}
    violations = sum(1 for hits in found for h in hits if not mask[row_of[h]])
    truth_raw = ids[exact_filtered(xs, q, mask)]
    truth_scored = ids[exact_filtered(ys, qs, mask)]
    expected = min(K, int(mask.sum()))

    def recall(truth: np.ndarray) -> float:
        return float(
            np.mean(
                [
                    len(set(f) & set(t.tolist())) / expected
                    for f, t in zip(found, truth, strict=True)
                ]
            )
        )

    return {
        "selectivity": float(mask.mean()),
        "selected": int(mask.sum()),
        "violations": violations,
        "short_answers": sum(1 for hits in found if len(hits) < expected),
        "recall_at_10_raw_space": recall(truth_raw),
        "recall_at_10_scoring_space": recall(truth_scored),
        "p50_ms": float(np.percentile(times, 50) * 1000),
        "p99_ms": float(np.percentile(times, 99) * 1000),
    }


if __name__ == "__main__":
    main()
