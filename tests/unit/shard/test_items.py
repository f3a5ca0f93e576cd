"""`GET /items/{id}` in process: an id whose partition holds nothing is a 404."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from simsearch.common.errors import NotFound
from simsearch.common.layout import IndexLayout
from simsearch.common.manifest import ModelInfo
from simsearch.common.storage import FileStore
from simsearch.indexer.writer import write_index
from simsearch.shard.collections import Collections
from simsearch.shard.items import find_item
from simsearch.shard.metrics import ShardMetrics
from simsearch.shard.settings import ShardSettings

DIM = 16


def test_an_item_of_an_empty_partition_is_a_404_not_a_crash(tmp_path: Path) -> None:
    """Ids that are all multiples of 4 in 4 partitions (`id % 4`) leave three empty."""
    ids = np.arange(40, dtype=np.int64) * 4
    vectors = np.random.default_rng(0).standard_normal((40, DIM)).astype(np.float32)
    layout = IndexLayout(FileStore(tmp_path / "store"))
    paths = [f"{i}.jpg" for i in range(40)]
    manifest = write_index(layout, ids, vectors, paths, ModelInfo(name="t", dim=DIM), 4)
    settings = ShardSettings(store=str(tmp_path / "store"), shard_ordinal=0, cache_dir=tmp_path)
    collections = Collections(layout.store, settings, ShardMetrics(CollectorRegistry()))
    holdings = collections.default().holdings
    holdings.reconcile(manifest, replicas=1)
    assert manifest.partition_files[1].count == 0
    with pytest.raises(NotFound, match="no image with id 5 "):
        find_item(holdings, collections.settings, 5, None)
