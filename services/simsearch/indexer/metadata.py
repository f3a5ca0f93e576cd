"""A build's per-image metadata: built-in fields, the sidecar, S3 tags, and its schema.

Filters (`common.filters`) ask about an image's metadata, so every build gathers it for
every scanned image before anything is embedded: a bad sidecar then fails the build in
seconds, not after an hour of embedding, and before anything is published.

Sources, merged per image (a later one wins for a field both give):
1. the built-in fields (`common.metadata.builtin_row`): key, size and mtime from the
   listing, content_type from the suffix;
2. S3 object tags (`--metadata-tags`), one GetObjectTagging per image in a thread pool;
   each tag is a "string" field named by its key (a tag whose key is not a field name,
   or is a built-in's, is skipped and counted: tags are often set by other tools);
3. the sidecar (`metadata.jsonl`/`metadata.csv` at the images root, or `--metadata`),
   whose rows for keys that are not scanned images are ignored (counted and logged).

The schema is BUILTIN_FIELDS + `infer_schema` of the user fields (tag-only fields stay
"string"). `partition_table` turns the rows of one partition's keys into the file the
shard memory-maps (`partitions/<p>/metadata.arrow`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from simsearch.common.errors import ConfigError, InvalidParameter
from simsearch.common.metadata import (
    BUILTIN_FIELDS,
    SIDECAR_NAMES,
    Schema,
    builtin_row,
    content_type_of,
    infer_schema,
    is_field_name,
    parse_sidecar,
)
from simsearch.common.metatable import build_table, write_table
from simsearch.common.storage import (
    ObjectInfo,
    ObjectStore,
    S3Options,
    S3Store,
    open_store,
    split_object_uri,
)

__all__ = [
    "KEY_FIELDS",
    "TAG_WORKERS",
    "Metadata",
    "collect_metadata",
    "key_metadata",
    "partition_table",
    "read_sidecar",
]

log = logging.getLogger(__name__)

TAG_WORKERS = 16  # GetObjectTagging requests in flight (each is one small round trip)
# what a version knows without a listing (import-h5: paths only):
# size and mtime would be made up, so they are left out of the schema instead
KEY_FIELDS: Schema = {"key": "string", "content_type": "string"}


@dataclass(frozen=True)
class Metadata:
    """The schema and each image's row (by key); what the writer stores per partition."""

    schema: Schema
    rows: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    sidecar: str | None = None  # where the user rows came from (for the report)
    ignored: int = 0  # sidecar rows whose key is not a scanned image
    tagged: int = 0  # images that had at least one usable tag

    def row(self, key: str) -> Mapping[str, Any]:
        """`key`'s row; a key without one still has the fields its name gives."""
        found = self.rows.get(key)
        return found if found is not None else {"key": key, "content_type": content_type_of(key)}

    def summary(self) -> dict[str, Any]:
        """What the build report says about the metadata."""
        return {
            "fields": dict(self.schema),
            "sidecar": self.sidecar,
            "ignored_rows": self.ignored,
            "tagged": self.tagged,
        }


def key_metadata() -> Metadata:
    """The metadata of vectors that came without a listing: key and content type only."""
    return Metadata(schema=dict(KEY_FIELDS))


def read_sidecar(
    images: ObjectStore, named: str | None, s3: S3Options | None = None
) -> tuple[str, bytes] | None:
    """(name, bytes) of the sidecar: `named` (a path or URI) if given, else the first of
    SIDECAR_NAMES at the images root; None when there is none.

    A named file must exist and end in .jsonl or .csv (its format is its suffix).
    """
    if named is not None:
        root, key = split_object_uri(named)
        if not key.endswith((".jsonl", ".csv")):
            raise ConfigError(f"metadata sidecar {named!r} must end in .jsonl or .csv")
        return key.rsplit("/", 1)[-1], open_store(root, s3).get(key)
    for name in SIDECAR_NAMES:
        if images.exists(name):
            return name, images.get(name)
    return None


def collect_metadata(
    images: ObjectStore,
    scanned: Sequence[ObjectInfo],
    sidecar: tuple[str, bytes] | None,
    tags: bool = False,
    progress: bool = True,
) -> Metadata:
    """Every scanned image's row and the schema (InvalidParameter for a bad sidecar).

    The sidecar is parsed first, so a bad one fails before a single tag is requested.
    """
    name, parsed = (sidecar[0], parse_sidecar(sidecar[1], sidecar[0])) if sidecar else (None, {})
    rows = {info.key: builtin_row(info.key, info.size, info.mtime) for info in scanned}
    user: dict[str, dict[str, Any]] = {key: {} for key in rows}
    tagged, tag_fields = _add_tags(images, user, progress) if tags else (0, set())
    ignored = _add_sidecar(user, parsed, name) if name is not None else 0
    sidecar_fields = {f for key, row in parsed.items() if key in user for f in row}
    try:
        schema = infer_schema([row for row in user.values() if row])
    except InvalidParameter as err:
        sources = " and ".join(s for s in (name, "S3 tags" if tags else None) if s)
        raise InvalidParameter(f"{sources}: {err.reason}") from None
    for only_tag in tag_fields - sidecar_fields:
        if only_tag in schema:
            schema[only_tag] = "string"  # tag values are strings, even date-like ones
    for key, extra in user.items():
        rows[key].update(extra)
    return Metadata(
        schema={**BUILTIN_FIELDS, **schema},
        rows=rows,
        sidecar=name,
        ignored=ignored,
        tagged=tagged,
    )


def _add_sidecar(
    user: dict[str, dict[str, Any]], parsed: Mapping[str, Mapping[str, Any]], name: str
) -> int:
    """Merge the sidecar's rows into `user`; returns how many named no scanned image."""
    unknown = [key for key in parsed if key not in user]
    for key, row in parsed.items():
        if key in user:
            user[key].update(row)
    if unknown:
        log.warning(
            "%s: %d row(s) name no image under the images root and are ignored (e.g. %s)",
            name,
            len(unknown),
            ", ".join(repr(k[:80]) for k in unknown[:3]),
        )
    return len(unknown)


def _add_tags(
    images: ObjectStore, user: dict[str, dict[str, Any]], progress: bool
) -> tuple[int, set[str]]:
    """Every image's S3 tags into `user`; (images with a usable tag, tag field names)."""
    if not isinstance(images, S3Store):
        raise ConfigError(f"--metadata-tags reads S3 object tags; {images.uri} is not s3://")
    keys = list(user)
    bar = tqdm(total=len(keys), unit="img", desc="tags", disable=not progress, file=sys.stderr)
    skipped: set[str] = set()
    fields: set[str] = set()
    tagged = 0

    def one(key: str) -> dict[str, str]:
        found = images.tags(key)
        bar.update(1)
        return found

    with ThreadPoolExecutor(TAG_WORKERS, "metadata-tags") as pool:
        for key, found in zip(keys, pool.map(one, keys), strict=True):
            usable = {k: v for k, v in found.items() if _tag_field(k)}
            skipped |= found.keys() - usable.keys()
            if usable:
                tagged += 1
                fields |= usable.keys()
                user[key].update(usable)
    bar.close()
    if skipped:
        log.warning(
            "S3 tags skipped (not a field name, or a built-in's): %s",
            ", ".join(sorted(repr(k[:64]) for k in skipped)[:10]),
        )
    return tagged, fields


def _tag_field(name: str) -> bool:
    return is_field_name(name) and name not in BUILTIN_FIELDS


def partition_table(path: Path, ids: np.ndarray, keys: Sequence[str], metadata: Metadata) -> None:
    """Write `metadata.arrow` of one partition: row i for `ids[i]`, image `keys[i]`."""
    if len(ids) != len(keys):
        raise InvalidParameter(f"{len(ids)} ids but {len(keys)} keys for a metadata table")
    write_table(build_table(ids, [metadata.row(k) for k in keys], metadata.schema), path)
