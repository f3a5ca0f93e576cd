"""`save_image`'s file: written beside the target under a temporary name, renamed at the end.

A download that fails half-way (a lost connection, a 404 after a retry) leaves the
target as it was, never a truncated image under its name. Shared by both clients.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from types import TracebackType
from typing import IO

__all__ = ["Download"]


class Download:
    """`with Download(path) as d: d.write(chunk)`; renamed to `path` on a clean exit."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.size = 0
        self._file: IO[bytes] | None = None
        self._part = target

    def __enter__(self) -> Download:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{self.target.name}.", dir=self.target.parent)
        self._part = Path(name)
        self._file = os.fdopen(fd, "wb")
        return self

    def write(self, chunk: bytes) -> None:
        assert self._file is not None, "write() outside `with`"
        self._file.write(chunk)
        self.size += len(chunk)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._file is not None
        self._file.close()
        if kind is None:
            os.replace(self._part, self.target)
        else:
            self._part.unlink(missing_ok=True)
