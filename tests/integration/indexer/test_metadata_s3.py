"""`simsearch index build` with a sidecar and S3 object tags, against a real moto S3 server.

Photos go into a bucket, some with object tags, next to a `metadata.csv`; the CLI builds
the index (in-process model) with `--metadata-tags` into the same bucket; the test reads
each partition's `metadata.arrow` back from S3 and checks it row by row against the
partition's `features.h5`, and the schema in the manifest.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from simsearch.common.layout import IndexLayout
from simsearch.common.metadata import BUILTIN_FIELDS
from simsearch.common.storage import S3Options, S3Store
from tests.support.metatables import read_partitions, rows_by_key
from tests.support.paths import SAMPLE_IMAGES
from tests.support.procs import checkout_env
from tests.support.s3server import AWS, s3_client

pytestmark = pytest.mark.integration

BUCKET = "meta"


def upload(s3: Any) -> dict[str, Path]:
    """~10 photos under photos/, every third one tagged; returns key → local photo."""
    s3.create_bucket(Bucket=BUCKET)
    chosen = sorted(SAMPLE_IMAGES.glob("*/*.jpg"))[::60][:10]
    keys: dict[str, Path] = {}
    for i, photo in enumerate(chosen):
        key = f"{photo.parent.name}/{photo.name}"
        extra = {"Tagging": f"camera=cam{i}&owner=team-{i % 2}&bad tag=x"} if i % 3 == 0 else {}
        s3.put_object(Bucket=BUCKET, Key=f"photos/{key}", Body=photo.read_bytes(), **extra)
        keys[key] = photo
    ordered = sorted(keys)
    lines = ["key,label,rating,shot"]
    lines += [f"{k},{k.split('/')[0]},{i},2024-0{1 + i % 9}-01" for i, k in enumerate(ordered[:6])]
    lines.append("elsewhere/not-here.jpg,ghost,1,2024-01-01")  # no such image: ignored
    s3.put_object(Bucket=BUCKET, Key="photos/metadata.csv", Body="\n".join(lines).encode())
    return keys


def test_build_writes_sidecar_and_tag_metadata_aligned_with_features(
    s3_endpoint: str, s3_env: None, tmp_path: Path
) -> None:
    s3 = s3_client(s3_endpoint)
    keys = upload(s3)
    env = checkout_env({**AWS, "SIMSEARCH_S3_ENDPOINT_URL": s3_endpoint})
    command = [sys.executable, "-m", "simsearch.cli", "index", "build"]
    command += ["--images", f"s3://{BUCKET}/photos", "--store", f"s3://{BUCKET}/indexes"]
    command += ["--partitions", "4", "--workdir", str(tmp_path / "work"), "--no-progress"]
    command += ["--metadata-tags"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f'"embedded": {len(keys)}' in done.stdout
    assert '"ignored_rows": 1' in done.stdout

    store = S3Store(BUCKET, "indexes", S3Options(endpoint_url=s3_endpoint))
    layout = IndexLayout(store)
    manifest = layout.load_manifest()
    assert manifest.metadata == {
        **BUILTIN_FIELDS,
        "camera": "string",
        "label": "string",
        "owner": "string",
        "rating": "int",
        "shot": "time",
    }
    (tmp_path / "read").mkdir()
    parts = read_partitions(layout, manifest, tmp_path / "read")  # aligned, or it raises
    assert sum(len(p.ids) for p in parts) == len(keys)
    rows = rows_by_key(parts)
    assert sorted(rows) == sorted(keys)
    listed = {
        obj["Key"].removeprefix("photos/"): obj
        for obj in s3.list_objects_v2(Bucket=BUCKET, Prefix="photos/")["Contents"]
    }
    ordered = sorted(keys)
    for i, key in enumerate(ordered):
        row = rows[key]
        assert row["size"] == listed[key]["Size"] == keys[key].stat().st_size
        assert row["mtime"] == listed[key]["LastModified"]
        assert row["content_type"] == "image/jpeg"
        if i < 6:
            assert row["label"] == key.split("/")[0] and row["rating"] == i
            assert row["shot"].month == 1 + i % 9
        else:
            assert row["label"] is None and row["rating"] is None
    tagged = [rows[k] for k in keys if rows[k]["camera"] is not None]
    assert len(tagged) == len(range(0, len(keys), 3))  # every third photo
    assert all(r["owner"] in ("team-0", "team-1") for r in tagged)
    assert "bad tag" in done.stderr  # the unusable tag is named in the log, then skipped
