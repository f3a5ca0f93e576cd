"""The manifest schema of an index version: validation, version ids and file checksums.

Pure models and helpers (`common/manifest.py`), no store: what a published version says
about itself, and the checks a shard runs before it trusts a downloaded file. The store
side (publish, rollback, gc) is in test_layout.py, which builds its manifests from the
constants here.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from simsearch.common.errors import CorruptIndex, InvalidParameter
from simsearch.common.http import status_for
from simsearch.common.manifest import (
    FORMAT_VERSION,
    FileRef,
    IndexParams,
    Manifest,
    ModelInfo,
    PartitionInfo,
    is_version_id,
    new_version_id,
    sha256_file,
    verify_file,
)

MODEL = ModelInfo(name="efficientnet-lite0", dim=1280, preprocessing={"resize": 256, "crop": 224})
PARAMS = IndexParams(
    factory="Flat", nprobe=1, refine=1, train_size=0, reason="n=6 < 50000: exact Flat"
)
BASE = datetime(2026, 11, 27, 3, 15, tzinfo=UTC)


def vid(minutes: int) -> str:
    """A version id `minutes` after BASE, so tests control the chronological order."""
    return new_version_id(BASE + timedelta(minutes=minutes))


def manifest_kwargs(**changes: Any) -> dict[str, Any]:
    """Keyword arguments of a valid 3-partition manifest, with `changes` applied."""
    ref = FileRef(key="versions/x/trained.faiss", size=1, sha256="0" * 64)
    kwargs: dict[str, Any] = {
        "index_name": "default",
        "version": vid(0),
        "created": BASE,
        "model": MODEL,
        "params": PARAMS,
        "partitions": 3,
        "total": 6,
        "trained": ref,
        "partition_files": [
            PartitionInfo(partition=p, count=2, index=ref, features=ref) for p in range(3)
        ],
    }
    kwargs.update(changes)
    return kwargs


def test_valid_manifest_round_trips_through_json() -> None:
    manifest = Manifest(
        **manifest_kwargs(created=datetime(2026, 1, 2, 5, tzinfo=timezone(timedelta(hours=2))))
    )
    assert manifest.format_version == FORMAT_VERSION
    assert manifest.created == datetime(2026, 1, 2, 3, tzinfo=UTC)
    assert manifest.created.tzinfo is UTC
    data = json.loads(manifest.model_dump_json())
    assert data["created"] == "2026-01-02T03:00:00Z"
    assert data["params"]["metric"] == "ip"
    assert Manifest.model_validate_json(manifest.model_dump_json()) == manifest
    assert len(manifest.files()) == 1 + 2 * 3


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"partitions": 4}, "partitions is 4 but partition_files has 3"),
        ({"total": 7}, "total is 7 but the partition counts sum to 6"),
        ({"format_version": 2}, "format_version 2 is not supported"),
        ({"created": datetime(2026, 1, 1)}, "timezone-aware"),
        ({"version": "v1"}, "invalid version id"),
        ({"index_name": "Bad Name"}, "invalid index name"),
        ({"parent": vid(5)}, "must be older"),
        ({"unknown_field": 1}, "unknown_field"),
    ],
)
def test_manifest_validation_errors(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        Manifest(**manifest_kwargs(**changes))


def test_manifest_partition_numbers_checked() -> None:
    base = manifest_kwargs()
    files: list[PartitionInfo] = base["partition_files"]
    dupe = [files[0], files[1], files[1]]
    with pytest.raises(ValidationError, match=r"duplicated \[1\], missing \[2\]"):
        Manifest(**manifest_kwargs(partition_files=dupe))
    with pytest.raises(ValidationError, match="sorted by partition"):
        Manifest(**manifest_kwargs(partition_files=[files[1], files[0], files[2]]))
    with pytest.raises(ValidationError, match="partition_files has 0"):
        Manifest(**manifest_kwargs(partitions=1, partition_files=[], total=0))


@pytest.mark.parametrize(
    ("key", "sha"),
    [
        ("../x", "0" * 64),
        ("/abs", "0" * 64),
        ("a//b", "0" * 64),
        ("a\\b", "0" * 64),
        ("ok", "0" * 63),
        ("ok", "A" * 64),
    ],
)
def test_file_ref_validation(key: str, sha: str) -> None:
    with pytest.raises(ValidationError):
        FileRef(key=key, size=1, sha256=sha)
    with pytest.raises(ValidationError):
        FileRef(key="ok", size=-1, sha256="0" * 64)


def test_new_version_id_sorts_by_time() -> None:
    ids = [new_version_id(BASE + timedelta(seconds=s)) for s in (0, 1, 59, 3600, 86400 * 40)]
    assert ids == sorted(ids)
    assert all(is_version_id(v) for v in ids)
    assert ids[0].startswith("v20261127T031500Z-")
    # an aware non-UTC time is converted; a naive one is refused
    other = new_version_id(datetime(2026, 11, 27, 4, 15, tzinfo=timezone(timedelta(hours=1))))
    assert other.startswith("v20261127T031500Z-")
    with pytest.raises(InvalidParameter):
        new_version_id(datetime(2026, 1, 1))
    assert is_version_id(new_version_id())
    assert len({new_version_id(BASE) for _ in range(50)}) == 50  # random suffix


def test_sha256_and_verify_file_detects_a_flipped_byte(tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000  # > 2 MiB: more than one 1 MiB chunk
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    good = hashlib.sha256(data).hexdigest()
    assert sha256_file(path) == good
    ref = FileRef(key="versions/v/f.bin", size=len(data), sha256=good)
    verify_file(path, ref)
    flipped = bytearray(data)
    flipped[1_500_000] ^= 0x01
    path.write_bytes(bytes(flipped))
    with pytest.raises(CorruptIndex) as info:
        verify_file(path, ref)
    assert "versions/v/f.bin" in info.value.reason
    assert good in info.value.reason and sha256_file(path) in info.value.reason
    assert status_for(info.value) == 503 and info.value.code == "corrupt_index"
    path.write_bytes(data[:-1])
    with pytest.raises(CorruptIndex, match="bytes"):
        verify_file(path, ref)
    path.unlink()
    with pytest.raises(CorruptIndex, match="does not exist"):
        verify_file(path, ref)
