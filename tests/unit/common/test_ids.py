"""Stable ids and partitioning: pinned values, range, scalar == vectorised."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest

from simsearch.common.errors import InvalidParameter
from simsearch.common.ids import MAX_ID, key_id, key_ids, partition_of, partition_of_many
from tests.support.paths import ROOT

# Pinned: changing any of these renumbers every index ever built. The empty key and the
# non-ASCII key have the top digest bit set (e4…, 93…), so they pin the 63-bit mask too.
PINNED = {
    "images/cat.jpg": 7722464175018406229,  # blake2b-64 6b2bb44076a6f155
    "a/b/c.png": 3862727171915864124,  # 359b29e5b24b583c
    "": 7252660547403494068,  # e4a6a0577479b2b4 & (2**63 - 1)
    "naïve/ü.jpg": 1419691657349289371,  # 93b3c20a5ee3d59b & (2**63 - 1), UTF-8 bytes
}


@pytest.mark.parametrize(("key", "expected"), PINNED.items())
def test_key_id_pinned_values(key: str, expected: int) -> None:
    assert key_id(key) == expected
    digest = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
    assert expected == digest & (2**63 - 1)


def test_key_id_is_stable_across_processes() -> None:
    """Unlike hash(), the id must not depend on the process (PYTHONHASHSEED)."""
    code = "from simsearch.common.ids import key_id; print(key_id('images/cat.jpg'))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PYTHONPATH": "services"},
        cwd=ROOT,
    )
    assert int(out.stdout) == PINNED["images/cat.jpg"]


def test_ids_are_63_bit_non_negative_int64() -> None:
    keys = [f"img/{i:05d}.jpg" for i in range(5000)]
    ids = key_ids(keys)
    assert ids.dtype == np.int64
    assert ids.min() >= 0
    assert int(ids.max()) <= MAX_ID == np.iinfo(np.int64).max
    assert len(set(ids.tolist())) == len(keys)
    assert [key_id(k) for k in keys[:50]] == ids[:50].tolist()
    # the top bit of the digest is set about half the time: the mask is doing work
    raw_top = [hashlib.blake2b(k.encode(), digest_size=8).digest()[0] >= 0x80 for k in keys]
    assert 2000 < sum(raw_top) < 3000


def test_key_id_refuses_non_strings() -> None:
    with pytest.raises(InvalidParameter):
        key_id(b"bytes")  # type: ignore[arg-type]


@pytest.mark.parametrize("partitions", [1, 7, 64, 1000])
def test_partition_of_many_matches_scalar(partitions: int) -> None:
    ids = key_ids(f"k{i}" for i in range(2000))
    ids = np.concatenate([ids, np.array([0, 1, MAX_ID], dtype=np.int64)])
    many = partition_of_many(ids, partitions)
    assert many.dtype == np.int64 and many.shape == ids.shape
    assert many.tolist() == [partition_of(int(i), partitions) for i in ids]
    assert many.min() >= 0 and many.max() < partitions
    # other integer dtypes and shapes give the same answer
    assert partition_of_many(ids.astype(np.uint64), partitions).tolist() == many.tolist()
    assert partition_of_many(ids.reshape(-1, 1), partitions).reshape(-1).tolist() == many.tolist()


def test_partitions_are_balanced() -> None:
    counts = np.bincount(partition_of_many(key_ids(f"k{i}" for i in range(64_000)), 64))
    assert counts.min() > 800 and counts.max() < 1200  # 1000 expected each


def test_partition_of_known_value() -> None:
    assert partition_of(PINNED["images/cat.jpg"], 64) == 7722464175018406229 % 64 == 21


def test_partition_refusals() -> None:
    with pytest.raises(InvalidParameter):
        partition_of(5, 0)
    with pytest.raises(InvalidParameter):
        partition_of(-1, 64)  # FAISS's "no result"
    with pytest.raises(InvalidParameter):
        partition_of_many(np.array([3, -1]), 64)
    with pytest.raises(InvalidParameter):
        partition_of_many(np.array([1.0, 2.0]), 64)
    with pytest.raises(InvalidParameter):
        partition_of_many(np.array([1 << 63], dtype=np.uint64), 64)
    assert partition_of_many(np.array([], dtype=np.int64), 4).shape == (0,)
