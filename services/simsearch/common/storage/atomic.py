"""Atomic local writes: a temp file next to the target, fsync, then one rename.

Both backends write local files this way (`FileStore` for every object, `S3Store` for
downloads), so a crash or an error midway never leaves a truncated file where a reader or
a cache that checks `path.is_file()` would trust it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["TEMP_SUFFIX", "temp_sibling", "write_atomically"]

# Temp files of in-flight atomic writes live next to their target (so os.replace stays a
# same-filesystem rename) and carry this suffix so that `FileStore.list` can skip them.
TEMP_SUFFIX = ".simsearch-tmp"


def temp_sibling(path: Path) -> Path:
    """A unique hidden name next to `path`, so the final os.replace is an atomic rename."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")


def write_atomically(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Run `write` into a temp file next to `path`, fsync it, then rename it over `path`.

    Readers see either the old file or the complete new one, never a torn write; the
    fsync makes the rename durable content rather than an empty file after a power loss.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        with open(tmp, "xb") as out:  # mode 0o666 & ~umask, like any other new file
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
