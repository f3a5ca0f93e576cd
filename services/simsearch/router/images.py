"""Where an indexed image's bytes are, and how `GET /images/{id}` hands them out.

A shard stores each image's `path`: the object key relative to the images root the index
was built from (`simsearch index build --images URI`), or a full `s3://`/`file://` URI
(imported indexes). The root is the `source` recorded in the version's manifest, read
once per (collection, version) from `SIMSEARCH_STORE` (each collection is its own index,
`IndexLayout(store, name)`, built from its own images). `SIMSEARCH_IMAGES_ROOT`, when set,
overrides it for the default collection only: it names one folder of images, and the
other collections were built from others.

With `SIMSEARCH_PUBLIC_S3_ENDPOINT` and images on S3, the client is redirected to a URL
presigned for that public endpoint, so image bytes never pass through the router; else
the router reads the object (bounded by `max_image_bytes`) and returns it.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from simsearch.common.errors import NoImagesRoot
from simsearch.common.imaging import sniff_format
from simsearch.common.layout import IndexLayout
from simsearch.common.storage import (
    ObjectStore,
    S3Options,
    S3Store,
    is_uri,
    open_store,
    split_object_uri,
)

__all__ = ["ImageLocator", "ImageReply", "media_type"]

_MEDIA_TYPES = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "TIFF": "image/tiff",
    "BMP": "image/bmp",
}


def media_type(data: bytes) -> str:
    """The content type the bytes' magic identifies; never trusts a file name."""
    return _MEDIA_TYPES.get(sniff_format(data) or "", "application/octet-stream")


@dataclass(frozen=True)
class ImageReply:
    """Either the bytes and their media type, or a URL to redirect the client to."""

    data: bytes | None = None
    media_type: str = "application/octet-stream"
    redirect: str | None = None


class ImageLocator:
    """Resolves stored paths to (store, key) and fetches or presigns them (blocking I/O).

    Stores are opened once per root and cached: boto3 clients are expensive to build and
    safe to share between the worker threads these methods run in.
    """

    def __init__(
        self,
        images_root: str | None,
        index_store: str | None,
        index_name: str,
        s3: S3Options,
        public_endpoint: str | None,
        presign_expires_s: int = 3600,
        max_image_bytes: int = 50 * 1024 * 1024,
    ) -> None:
        self.images_root = images_root
        self.s3 = s3
        self.public_endpoint = public_endpoint
        self.presign_expires_s = presign_expires_s
        self.max_image_bytes = max_image_bytes
        self.index_name = index_name  # the default collection
        self._index_store = open_store(index_store, s3) if index_store else None
        self._stores: dict[str, ObjectStore] = {}
        self._sources: dict[tuple[str, str], str | None] = {}
        self._lock = threading.Lock()

    def root_for(self, version: str, collection: str | None = None) -> str | None:
        """The images root of `version` of `collection` (default: the default one): the
        setting for the default collection, else the version's manifest's `source`."""
        name = self.index_name if collection is None else collection
        if self.images_root and name == self.index_name:
            return self.images_root
        if self._index_store is None:
            return None
        with self._lock:
            if (name, version) in self._sources:
                return self._sources[(name, version)]
        source = IndexLayout(self._index_store, name).load_manifest(version).source
        with self._lock:
            self._sources[(name, version)] = source
        return source

    def locate(
        self, path: str, version: str, collection: str | None = None
    ) -> tuple[ObjectStore, str]:
        """The store and key a stored `path` names."""
        if is_uri(path) or os.path.isabs(path):
            root, key = split_object_uri(path)
        else:
            found = self.root_for(version, collection)
            if not found:
                raise NoImagesRoot(
                    f"index version {version} stores image keys relative to the images it was "
                    "built from, but the router does not know where those are: set "
                    "SIMSEARCH_IMAGES_ROOT (or SIMSEARCH_STORE, whose manifest records it)"
                )
            root, key = found, path
        return self._store(root), key

    def _store(self, root: str) -> ObjectStore:
        with self._lock:
            store = self._stores.get(root)
        if store is None:
            store = open_store(root, self.s3)
            with self._lock:
                store = self._stores.setdefault(root, store)
        return store

    def fetch(self, path: str, version: str, collection: str | None = None) -> ImageReply:
        """A presigned redirect when configured for S3, else the (bounded) bytes."""
        store, key = self.locate(path, version, collection)
        if self.public_endpoint and isinstance(store, S3Store):
            url = store.presigned_get_url(
                key, self.presign_expires_s, public_endpoint_url=self.public_endpoint
            )
            return ImageReply(redirect=url)
        data = store.get_limited(key, self.max_image_bytes)
        return ImageReply(data=data, media_type=media_type(data))
