"""`FileStore`: objects as files under a local directory, written atomically.

For development, tests and single-node set-ups. Only regular files are objects: a key
naming a FIFO, device, socket or directory is `ObjectNotFound`, and reading one never
blocks. Every write goes through `atomic.write_atomically` (temp sibling, fsync, rename),
so a concurrent reader sees the old file or the new one, never half of it.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO
from urllib.parse import quote

from simsearch.common.errors import (
    ConfigError,
    InvalidParameter,
    LocalWriteError,
    ObjectNotFound,
    PayloadTooLarge,
    StorageError,
)
from simsearch.common.storage.atomic import TEMP_SUFFIX, write_atomically
from simsearch.common.storage.base import ObjectInfo, ObjectStore, check_key

__all__ = ["FileStore"]

_COPY_BUFSIZE = 1024 * 1024


class FileStore(ObjectStore):
    """Objects as files under a local directory: development, tests, single-node setups.

    Keys map to nested paths ("a/b.jpg" -> <root>/a/b.jpg). Writes are atomic renames, so
    a concurrent reader never sees a half-written file.
    """

    def __init__(self, root: Path | str, *, follow_symlinks: bool = True) -> None:
        """Bind to the absolute directory `root`; it is created on the first write.

        `follow_symlinks=False` makes reads refuse a key whose last component is a symlink
        (`O_NOFOLLOW`): the embedder resolves references itself before reading, and must
        not follow a link swapped in after its check.
        """
        path = Path(root)
        if not path.is_absolute():
            raise ConfigError(f"file store root {str(root)!r} must be an absolute path")
        self._root = Path(os.path.normpath(path))
        self._follow_symlinks = follow_symlinks
        self.uri = self._root.as_uri()

    def ensure_root(self) -> bool:
        """Create the root folder unless it exists."""
        if self._root.is_dir():
            return False
        self._root.mkdir(parents=True, exist_ok=True)
        return True

    def _path(self, key: str) -> Path:
        """The file behind `key`, guaranteed to lie under the root."""
        check_key(key)
        path = self._root.joinpath(*key.split("/"))
        # Belt and braces for platform quirks (a "C:" segment on Windows re-roots a path).
        if not path.is_relative_to(self._root):
            raise InvalidParameter(f"object key {key!r} escapes the store root {self.uri}")
        return path

    def _missing(self, key: str) -> ObjectNotFound:
        return ObjectNotFound(f"object {self.url_for(key)} does not exist")

    def _failed(self, action: str, key: str, exc: OSError) -> StorageError:
        return StorageError(f"cannot {action} {self.url_for(key)}: {exc.strerror or exc}")

    def _open_regular(self, key: str) -> tuple[int, int]:
        """Open the file behind `key` for reading; (descriptor, size) of a regular file.

        Opened with O_NONBLOCK so that a FIFO without a writer cannot park the calling
        thread forever, then checked with fstat on the descriptor itself (no race with a
        rename): FIFOs, devices, sockets and directories are not objects. Only a regular
        file's descriptor is returned; the caller closes it.
        """
        path = self._path(key)
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)
        if not self._follow_symlinks:
            flags |= getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(path, flags)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise self._missing(key) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP and not self._follow_symlinks:
                raise ObjectNotFound(
                    f"object {self.url_for(key)} is a symbolic link, which is not followed"
                ) from None
            if exc.errno == errno.ENXIO:  # a socket, or a device with nothing behind it
                raise self._not_regular(key) from None
            raise self._failed("read", key, exc) from exc
        try:
            st = os.fstat(fd)
        except OSError as exc:
            os.close(fd)
            raise self._failed("stat", key, exc) from exc
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise self._not_regular(key)
        return fd, st.st_size

    def _not_regular(self, key: str) -> ObjectNotFound:
        return ObjectNotFound(f"object {self.url_for(key)} is not a regular file")

    def get(self, key: str) -> bytes:
        """Read the file whole (regular files only)."""
        fd, _ = self._open_regular(key)
        try:
            with os.fdopen(fd, "rb") as f:
                return f.read()
        except OSError as exc:
            raise self._failed("read", key, exc) from exc

    def get_limited(self, key: str, max_bytes: int) -> bytes:
        """Check the size via fstat, then read at most `max_bytes + 1` bytes (files grow)."""
        if max_bytes < 0:
            raise InvalidParameter(f"max_bytes must be >= 0, got {max_bytes}")
        fd, size = self._open_regular(key)
        try:
            with os.fdopen(fd, "rb") as f:
                if size > max_bytes:
                    raise PayloadTooLarge(
                        f"object {self.url_for(key)} has {size} bytes, over the limit of "
                        f"{max_bytes}"
                    )
                data = f.read(max_bytes + 1)
        except OSError as exc:
            raise self._failed("read", key, exc) from exc
        if len(data) > max_bytes:
            raise PayloadTooLarge(
                f"object {self.url_for(key)} has more than {max_bytes} bytes, over the limit"
            )
        return data

    def put(self, key: str, data: bytes) -> None:
        """Write to a temp file and rename it into place."""
        path = self._path(key)

        def write(out: IO[bytes]) -> None:
            out.write(data)

        try:
            write_atomically(path, write)
        except OSError as exc:
            raise self._failed("write", key, exc) from exc

    def upload_file(self, key: str, path: Path) -> None:
        """Copy the local file in atomically; a missing source raises FileNotFoundError."""
        target = self._path(key)
        with open(path, "rb") as src:  # a missing source is the caller's bug, not storage's
            try:
                write_atomically(target, lambda out: shutil.copyfileobj(src, out, _COPY_BUFSIZE))
            except OSError as exc:
                raise self._failed("write", key, exc) from exc

    def download_file(self, key: str, path: Path) -> None:
        """Copy the object out to `path` through a temp file and a rename."""
        source = self._path(key)
        try:
            src = open(source, "rb")  # noqa: SIM115 - closed below, after the missing-key check
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise self._missing(key) from None
        except OSError as exc:
            raise self._failed("read", key, exc) from exc
        with src:
            try:
                write_atomically(
                    Path(path), lambda out: shutil.copyfileobj(src, out, _COPY_BUFSIZE)
                )
            except OSError as exc:
                raise LocalWriteError(
                    f"cannot download {self.url_for(key)} to {path}: {exc.strerror or exc}"
                ) from exc

    def exists(self, key: str) -> bool:
        """True for a regular file; a directory is not an object."""
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        """The file's size from stat."""
        path = self._path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise self._missing(key) from None
        except OSError as exc:
            raise self._failed("stat", key, exc) from exc
        if not stat.S_ISREG(st.st_mode):
            raise self._missing(key)  # a directory is not an object
        return st.st_size

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Walk only the directory the prefix points into, then sort like S3 does.

        Keys are sorted as strings, which is S3's order (code points sort like UTF-8
        bytes); a directory walk alone would not be ("a/b" must come after "a-c").
        """
        check_key(prefix, prefix=True)
        head, _, _ = prefix.rpartition("/")
        base = self._root.joinpath(*head.split("/")) if head else self._root
        found: list[ObjectInfo] = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            rel = Path(dirpath).relative_to(self._root).as_posix()
            for name in filenames:
                if name.endswith(TEMP_SUFFIX):
                    continue  # an atomic write in flight, not an object yet
                key = name if rel == "." else f"{rel}/{name}"
                if not key.startswith(prefix):
                    continue
                try:
                    st = os.stat(os.path.join(dirpath, name))
                except FileNotFoundError:
                    continue  # deleted while we walked
                found.append(ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC)))
        found.sort(key=lambda info: info.key)
        yield from found

    def delete(self, key: str) -> None:
        """Unlink the file; a missing file (or a directory) means nothing to delete."""
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
        except (IsADirectoryError, NotADirectoryError):
            return
        except PermissionError as exc:
            if path.is_dir():  # unlink(dir) is EPERM on Linux; a directory is no object
                return
            raise self._failed("delete", key, exc) from exc
        except OSError as exc:
            raise self._failed("delete", key, exc) from exc

    def url_for(self, key: str) -> str:
        """`file:///root/` + the percent-encoded key, as `Path.as_uri` would write it."""
        check_key(key)
        return f"{self.uri.rstrip('/')}/{quote(key)}"
