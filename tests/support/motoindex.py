"""An index layout in a bucket of the moto server, for tests that publish with the
indexer's own writer and then start shards on it, and the environment of such a shard.

The writer's boto3 reads credentials from the environment, so the block runs with the
test credentials set and any real profile or endpoint override removed; the variables
are restored when it ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from simsearch.common.layout import IndexLayout
from simsearch.common.storage import S3Options, S3Store
from tests.support.s3server import AWS, s3_client


@contextmanager
def moto_layout(endpoint: str, bucket: str, prefix: str = "idx") -> Iterator[IndexLayout]:
    """The default index's layout at `s3://bucket/prefix` (the bucket is created)."""
    with pytest.MonkeyPatch.context() as env_patch:
        for name, value in AWS.items():
            env_patch.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
            env_patch.delenv(name, raising=False)
        s3_client(endpoint).create_bucket(Bucket=bucket)
        yield IndexLayout(S3Store(bucket, prefix, S3Options(endpoint_url=endpoint)))


def one_shard_env(store: str, endpoint: str, cache: Path, **extra: str) -> dict[str, str]:
    """The environment of the only shard (ordinal 0 of 1) of an index at `store` in the
    moto server at `endpoint`; `extra` adds or overrides SIMSEARCH_* variables."""
    return {
        "SIMSEARCH_STORE": store,
        "SIMSEARCH_S3_ENDPOINT_URL": endpoint,
        **AWS,
        "SIMSEARCH_SHARD_ORDINAL": "0",
        "SIMSEARCH_REPLICAS": "1",
        "SIMSEARCH_CACHE_DIR": str(cache),
        "SIMSEARCH_LOG_FORMAT": "text",
        **extra,
    }
