"""A dropped index version leaves nothing of itself mapped in the shard (/proc/PID/maps).

The shard memory-maps each partition's index and features. Search state used to live in
module globals (a template cache never cleared, an LRU of stacked partitions), which kept
the mappings of versions long gone. Now each held version owns its state (`VersionIndex`)
and dropping the version releases it: after version 2 takes over and the drain delay
passes, no mapping of version 1's files may remain, not even of deleted ones.
"""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import numpy as np
import pytest

from simsearch.common.ids import key_ids
from simsearch.common.layout import IndexLayout
from simsearch.common.manifest import ModelInfo
from simsearch.common.storage import open_store
from simsearch.indexer.writer import write_index
from tests.support.procs import start_service, wait_for

pytestmark = pytest.mark.integration

N, DIM, P = 2000, 64, 4


def publish(store_uri: str, seed: int) -> str:
    paths = [f"photos/{i:04d}.jpg" for i in range(N)]
    x = np.random.default_rng(seed).standard_normal((N, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    manifest = write_index(
        IndexLayout(open_store(store_uri)), key_ids(paths), x, paths,
        ModelInfo(name="synthetic", dim=DIM), partitions=P,
    )  # fmt: skip
    return manifest.version


def mapped(pid: int, version: str) -> list[str]:
    """The shard's mappings whose file belongs to `version` (deleted files included)."""
    lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return [line for line in lines if version in line]


def search(url: str, version: str) -> None:
    """One query over every partition (builds the stack that holds the mappings)."""
    vector = (np.ones(DIM) / np.sqrt(DIM)).astype("<f4")
    body = {
        "version": version, "partitions": list(range(P)), "k": 5, "dim": DIM, "nq": 1,
        "vectors_b64": base64.b64encode(vector.tobytes()).decode(),
    }  # fmt: skip
    response = httpx.post(f"{url}/search", json=body, timeout=10)
    assert response.status_code == 200, response.text


def test_a_dropped_version_is_no_longer_mapped(tmp_path: Path) -> None:
    store_uri = (tmp_path / "store").as_uri()
    first = publish(store_uri, seed=1)
    env = {
        "SIMSEARCH_STORE": store_uri,
        "SIMSEARCH_SHARD_ORDINAL": "0",
        "SIMSEARCH_REPLICAS": "1",
        "SIMSEARCH_POLL_S": "0.2",
        "SIMSEARCH_DRAIN_S": "0.5",
        "SIMSEARCH_CACHE_DIR": str(tmp_path / "cache"),
    }
    with start_service("shard", env) as shard:
        pid = shard.process.pid
        search(shard.url, first)
        assert mapped(pid, first), "version 1's files should be mapped while it is served"
        second = publish(store_uri, seed=2)

        def holds_only_second() -> bool:
            info = httpx.get(f"{shard.url}/info", timeout=5).json()
            return [v["version"] for v in info["versions"]] == [second]

        wait_for(holds_only_second, 30, "version 2 to take over and version 1 to be dropped")
        search(shard.url, second)
        wait_for(lambda: not mapped(pid, first), 10, "version 1's mappings to go")
        assert mapped(pid, second)
