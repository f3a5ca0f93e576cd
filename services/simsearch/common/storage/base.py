"""The object-store interface: `ObjectStore`, `ObjectInfo`, and the rules for keys.

Both backends (`file.FileStore`, `s3.S3Store`) implement this one interface and check
keys with the same `check_key`, so a key a local test store accepts is accepted by S3
and vice versa.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from simsearch.common.errors import InvalidParameter

__all__ = ["ObjectInfo", "ObjectStore", "check_key"]


@dataclass(frozen=True)
class ObjectInfo:
    """One listed object: its key relative to the store root, its size in bytes, and when
    it was last modified (UTC; None where a listing does not say). `mtime` is left out of
    equality: two listings of the same objects compare equal whatever their clocks."""

    key: str
    size: int
    mtime: datetime | None = field(default=None, compare=False)


class ObjectStore(ABC):
    """A flat namespace of byte objects under a root URI, addressed by "/"-separated keys.

    Implementations are safe to share between threads: services keep one store per
    process and call it from the request thread pool.
    """

    uri: str  # the root URI, e.g. "s3://bucket/prefix" or "file:///abs/dir"

    def ensure_root(self) -> bool:
        """Create the container of this store if it is missing (bucket or folder).

        Returns True when it had to be created. For set-ups that start from nothing (a
        fresh MinIO); normal operation never creates buckets by itself.
        """
        return False

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The whole object; `ObjectNotFound` if it does not exist."""

    @abstractmethod
    def get_limited(self, key: str, max_bytes: int) -> bytes:
        """The whole object, or `PayloadTooLarge` if it has more than `max_bytes` bytes.

        Exists so that a request naming a huge object cannot make us buffer it: at most
        `max_bytes + 1` bytes are ever read.
        """

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Store `data` under `key`, replacing any object there; readers never see half."""

    @abstractmethod
    def upload_file(self, key: str, path: Path) -> None:
        """Store the local file `path` under `key`, streaming it (multipart on S3)."""

    @abstractmethod
    def download_file(self, key: str, path: Path) -> None:
        """Write the object to the local `path` atomically, creating parent directories.

        A crash or error mid-download leaves no partial file at `path`, so a cache that
        checks `path.is_file()` never trusts a truncated download.
        """

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether an object is stored under `key` (store failures still raise)."""

    @abstractmethod
    def size(self, key: str) -> int:
        """The object's size in bytes; `ObjectNotFound` if it does not exist."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with `prefix` (a plain string prefix), recursively."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is not an error (idempotent cleanup)."""

    @abstractmethod
    def url_for(self, key: str) -> str:
        """The full URI of `key`, which `split_object_uri` and `open_store` turn back."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"


def check_key(key: str, *, prefix: bool = False) -> str:
    """Refuse keys that are empty, absolute or that could step outside the store root.

    The same rules hold for both backends so that a key accepted by a local test store is
    accepted by S3 and vice versa; on a directory store they are what keeps a request from
    reading `../../etc/passwd`.
    """
    what = "prefix" if prefix else "key"
    if not isinstance(key, str):
        raise InvalidParameter(f"object {what} must be a string, got {type(key).__name__}")
    if not key:
        if prefix:
            return key
        raise InvalidParameter("object key must not be empty")
    if "\\" in key or "\x00" in key:
        raise InvalidParameter(f"object {what} {key!r} must use '/' separators and no NUL")
    if key.startswith("/"):
        raise InvalidParameter(f"object {what} {key!r} must be relative, not absolute")
    parts = key.split("/")
    if prefix and parts[-1] == "":
        parts.pop()  # "images/" is a fine prefix
    for part in parts:
        if part in ("", ".", ".."):
            raise InvalidParameter(
                f"object {what} {key!r} has an empty, '.' or '..' segment; keys stay inside "
                "the store root"
            )
    return key
