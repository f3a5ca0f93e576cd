"""Stable vector ids and the partition each id lives in.

An image's id is a hash of its object key, not a row number:

* **Stable.** The same key gets the same id in every build, on every machine, in every
  Python process (blake2b is unkeyed and deterministic, unlike the built-in `hash()`,
  which is salted per process). An incremental build therefore never renumbers: vectors
  of unchanged images keep their ids, unchanged partitions can be reused as they are, and
  ids handed to clients (`GET /search/similar/{id}`, `GET /images/{id}`) stay valid
  across rebuilds.
* **63 bits.** FAISS stores ids as `int64` (`idx_t`) and uses -1 for "no result"; the
  `ids` dataset in `features.h5` is int64 as well. Masking the 64-bit digest to its low
  63 bits makes every id a non-negative int64, so it round-trips through FAISS, HDF5,
  numpy and JSON unchanged and can never collide with the -1 sentinel.

Collisions: with n images the chance of any two sharing an id is about n²/2⁶⁴ — around
5·10⁻⁸ for a hundred million images — which we accept rather than keep a key→id table.

`partition(id) = id mod P`: the hash is uniform, so partitions get equal shares, and an
image's partition depends only on its key and P, never on what else is in the index.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

from simsearch.common.errors import InvalidParameter

__all__ = ["ID_BITS", "MAX_ID", "key_id", "key_ids", "partition_of", "partition_of_many"]

ID_BITS = 63
MAX_ID = (1 << ID_BITS) - 1  # the largest id; also the mask applied to the digest


def key_id(key: str) -> int:
    """The id of the image stored under `key`: blake2b-64 of its UTF-8 bytes, low 63 bits.

    The digest is read big-endian, so the id is the same on every platform.
    """
    if not isinstance(key, str):
        raise InvalidParameter(f"an id is made from a string key, got {type(key).__name__}")
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") & MAX_ID


def key_ids(keys: Iterable[str]) -> np.ndarray:
    """`key_id` of each key, as an int64 array in input order (for `add_with_ids`)."""
    return np.fromiter((key_id(key) for key in keys), dtype=np.int64)


def _check_partitions(partitions: int) -> None:
    if isinstance(partitions, bool) or not isinstance(partitions, int | np.integer):
        raise InvalidParameter(f"partitions must be an integer, got {partitions!r}")
    if partitions < 1:
        raise InvalidParameter(f"partitions must be at least 1, got {partitions}")


def partition_of(id_: int, partitions: int) -> int:
    """The partition that holds `id_` among `partitions` (P): `id_ mod P`.

    A negative id is refused: it is FAISS's "no result" sentinel (-1) or a bug, and
    silently mapping it to a partition would hide either.
    """
    _check_partitions(partitions)
    if not 0 <= id_ <= MAX_ID:
        raise InvalidParameter(f"id {id_} is outside the 63-bit id range 0..{MAX_ID}")
    return int(id_) % int(partitions)


def partition_of_many(ids: np.ndarray, partitions: int) -> np.ndarray:
    """`partition_of` for a whole array of ids at once; returns int64 of the same shape.

    Same refusals as the scalar version: non-integer arrays and negative ids.
    """
    _check_partitions(partitions)
    arr = np.asarray(ids)
    if arr.dtype.kind not in "iu":
        raise InvalidParameter(f"ids must be an integer array, got dtype {arr.dtype}")
    if arr.size == 0:
        return np.zeros(arr.shape, dtype=np.int64)
    if arr.dtype.kind == "u":
        if int(arr.max()) > MAX_ID:
            raise InvalidParameter(f"ids must be 63-bit, got {int(arr.max())}")
        arr = arr.astype(np.int64)
    elif int(arr.min()) < 0:
        raise InvalidParameter(f"ids must be non-negative, got {int(arr.min())}")
    result: np.ndarray = np.remainder(arr.astype(np.int64, copy=False), np.int64(partitions))
    return result
