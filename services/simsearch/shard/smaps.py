"""`/proc/self/smaps` read into the figures a shard reports: anonymous, file-backed, per kind.

smaps gives each mapping's Size, Rss, Anonymous and Referenced. Summed over every mapping,
Anonymous and Rss less Anonymous are what `/proc/self/smaps_rollup` says (the anonymous
and the file-backed resident memory). File mappings of the shard's cache folder split by
kind: `codes` (`*.faiss`: index.faiss, trained.faiss), `features` (`features.h5`),
`metadata` (`metadata.arrow`); libraries, Python and anything else is `other`. Pure
functions over the text, so they are tested on fixtures; `memory.py` reads the file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from simsearch.common.wire import MemoryKind

__all__ = ["INDEX_KINDS", "KINDS", "Mapping", "Reading", "kind_of", "parse_smaps", "summarize"]

KINDS: tuple[MemoryKind, ...] = ("codes", "features", "metadata", "other")
INDEX_KINDS: tuple[MemoryKind, ...] = ("codes", "features", "metadata")
_FIELDS = {"Size:": "size", "Rss:": "rss", "Anonymous:": "anonymous", "Referenced:": "referenced"}
_DELETED = " (deleted)"


@dataclass(frozen=True)
class Mapping:
    """One mapping of `/proc/self/smaps`: its path ("" for plain anonymous memory,
    "[heap]"-style names for the kernel's own) and its sizes in bytes."""

    path: str
    size: int = 0
    rss: int = 0
    anonymous: int = 0
    referenced: int = 0

    @property
    def is_file(self) -> bool:
        """Whether a file backs it (deleted ones included): only those have a kind."""
        return self.path.startswith("/")


def parse_smaps(text: str) -> list[Mapping]:
    """Every mapping of an smaps text, in order; fields other than the four are skipped.

    A header line is `start-end perms offset dev inode [path]`; the path may hold spaces
    (and " (deleted)" once the file is gone), so it is everything after the fifth field.
    """
    mappings: list[Mapping] = []
    path: str | None = None
    values: dict[str, int] = {}
    for line in text.splitlines():
        head, _, rest = line.partition(" ")
        if head.endswith(":"):
            field = _FIELDS.get(head)
            if field is not None and path is not None:
                values[field] = int(rest.split()[0]) * 1024  # "8 kB"
        elif head:
            if path is not None:
                mappings.append(Mapping(path, **values))
            parts = line.split(maxsplit=5)
            path, values = (parts[5] if len(parts) > 5 else ""), {}
    if path is not None:
        mappings.append(Mapping(path, **values))
    return mappings


def kind_of(path: str, cache_root: str) -> MemoryKind:
    """The kind of a file mapping: an index file of the cache folder by its name, or other."""
    path = path.removesuffix(_DELETED)  # a dropped version's files, unlinked but mapped
    if not path.startswith(cache_root.rstrip("/") + "/"):
        return "other"
    name = path.rsplit("/", 1)[-1]
    if name.endswith(".faiss"):
        return "codes"
    if name == "features.h5":
        return "features"
    if name == "metadata.arrow":
        return "metadata"
    return "other"


@dataclass(frozen=True)
class Reading:
    """One smaps reading, summed: the process's anonymous and file-backed resident bytes,
    and per kind of file the bytes mapped, resident (Rss less Anonymous) and referenced."""

    anonymous: int
    file: int
    mapped: dict[MemoryKind, int]
    resident: dict[MemoryKind, int]
    referenced: dict[MemoryKind, int]


def summarize(mappings: Iterable[Mapping], cache_root: str) -> Reading:
    """Sum the mappings the way `smaps_rollup` does (anonymous, file), and split the file
    mappings by kind. Anonymous pages of a file mapping (copy-on-write) are anonymous."""
    anonymous = file = 0
    mapped, resident, referenced = (dict.fromkeys(KINDS, 0) for _ in range(3))
    for m in mappings:
        anonymous += m.anonymous
        file += m.rss - m.anonymous
        if m.is_file:
            kind = kind_of(m.path, cache_root)
            mapped[kind] += m.size
            resident[kind] += m.rss - m.anonymous
            referenced[kind] += m.referenced
    return Reading(anonymous, file, mapped, resident, referenced)
