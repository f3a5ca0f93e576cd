"""Router↔shard wire format: base64 little-endian arrays in JSON vs plain JSON numbers.

    python scripts/bench/wire_bench.py --out docs/bench/wire.json

For one query (1280-d) and one shard answer (k·refine = 100 candidates with ids, approx and
exact scores and paths), times what each side does per call: the router serialises the
request and parses the answer, the shard parses the request and serialises the answer.
Both formats go through the same pydantic models' JSON paths, in this process.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from simsearch.common.wire import ShardCandidates, ShardSearchRequest, decode_array, encode_array


class ListRequest(BaseModel):
    """The same request with the vector as a JSON list of numbers."""

    version: str
    partitions: list[int]
    k: int
    dim: int
    nq: int
    vectors: list[list[float]]


class ListCandidates(BaseModel):
    """The same answer with plain JSON arrays."""

    version: str
    nq: int
    width: int
    ids: list[list[int]]
    approx: list[list[float]]
    exact: list[list[float]]
    paths: list[list[str]]
    took_ms: float


def per_call_us(fn: Callable[[], object], seconds: float = 1.0) -> float:
    """Median of 5 timed batches, microseconds per call."""
    fn()
    runs = []
    for _ in range(5):
        n, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds / 5:
            fn()
            n += 1
        runs.append((time.perf_counter() - started) / n * 1e6)
    return float(np.median(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    q = rng.standard_normal((1, args.dim)).astype(np.float32)
    c = args.candidates
    ids = rng.integers(0, 2**63 - 1, (1, c), dtype=np.int64)
    scores = rng.random((1, c)).astype(np.float32)
    paths = [[f"photos/class-{i % 10}/image-{i:08d}.jpg" for i in range(c)]]
    parts = list(range(32))
    version = "v20261127T000000Z-abcdef"

    b64_req = ShardSearchRequest(
        version=version,
        partitions=parts,
        k=10,
        dim=args.dim,
        nq=1,
        vectors_b64=encode_array(q, "<f4"),
    )
    list_req = ListRequest(
        version=version, partitions=parts, k=10, dim=args.dim, nq=1, vectors=q.tolist()
    )
    b64_ans = ShardCandidates(
        version=version,
        nq=1,
        width=c,
        ids_b64=encode_array(ids, "<i8"),
        approx_b64=encode_array(scores, "<f4"),
        exact_b64=encode_array(scores, "<f4"),
        paths=paths,
        took_ms=1.0,
    )
    list_ans = ListCandidates(
        version=version,
        nq=1,
        width=c,
        ids=ids.tolist(),
        approx=scores.tolist(),
        exact=scores.tolist(),
        paths=paths,
        took_ms=1.0,
    )
    b64_req_json, list_req_json = b64_req.model_dump_json(), list_req.model_dump_json()
    b64_ans_json, list_ans_json = b64_ans.model_dump_json(), list_ans.model_dump_json()

    def b64_request_cycle() -> None:
        body = ShardSearchRequest(
            version=version,
            partitions=parts,
            k=10,
            dim=args.dim,
            nq=1,
            vectors_b64=encode_array(q, "<f4"),
        ).model_dump_json()
        got = ShardSearchRequest.model_validate_json(body)
        decode_array(got.vectors_b64, "<f4", (1, args.dim))

    def list_request_cycle() -> None:
        body = ListRequest(
            version=version, partitions=parts, k=10, dim=args.dim, nq=1, vectors=q.tolist()
        ).model_dump_json()
        np.asarray(ListRequest.model_validate_json(body).vectors, dtype=np.float32)

    def b64_answer_cycle() -> None:
        got = ShardCandidates.model_validate_json(b64_ans.model_dump_json())
        decode_array(got.ids_b64, "<i8", (1, c))
        decode_array(got.exact_b64, "<f4", (1, c))
        decode_array(got.approx_b64, "<f4", (1, c))

    def list_answer_cycle() -> None:
        got = ListCandidates.model_validate_json(list_ans.model_dump_json())
        np.asarray(got.ids, dtype=np.int64)
        np.asarray(got.exact, dtype=np.float32)
        np.asarray(got.approx, dtype=np.float32)

    result = {
        "command": "python scripts/bench/wire_bench.py",
        "dim": args.dim,
        "candidates": c,
        "request_bytes": {"base64": len(b64_req_json), "json_numbers": len(list_req_json)},
        "answer_bytes": {"base64": len(b64_ans_json), "json_numbers": len(list_ans_json)},
        "request_us": {
            "base64": per_call_us(b64_request_cycle),
            "json_numbers": per_call_us(list_request_cycle),
        },
        "answer_us": {
            "base64": per_call_us(b64_answer_cycle),
            "json_numbers": per_call_us(list_answer_cycle),
        },
        "bit_exact": {
            "base64": bool(
                np.array_equal(decode_array(b64_req.vectors_b64, "<f4", (1, args.dim)), q)
            ),
            "json_numbers": bool(
                np.array_equal(np.asarray(json.loads(list_req_json)["vectors"], np.float32), q)
            ),
        },
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
