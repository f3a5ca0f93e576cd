"""Stage 1 of a build: which images are there (keys under an `s3://` or `file://` prefix)."""

from __future__ import annotations

from simsearch.common.storage import ObjectInfo, ObjectStore

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".mpo"}
)


def is_image_key(key: str) -> bool:
    """By suffix: listing a bucket must not download every object to sniff it.

    Objects that claim an image suffix but are not images are refused later, one by one,
    by the embedder (and reported), never by failing the whole build.
    """
    dot = key.rfind(".")
    return (
        dot >= 0
        and key[dot:].lower() in IMAGE_SUFFIXES
        and not key.rsplit("/", 1)[-1].startswith(".")
    )


def scan_images(store: ObjectStore) -> list[ObjectInfo]:
    """Every non-empty image object under the store's root, sorted by key."""
    return sorted(
        (info for info in store.list() if info.size > 0 and is_image_key(info.key)),
        key=lambda info: info.key,
    )
