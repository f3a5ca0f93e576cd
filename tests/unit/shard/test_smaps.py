"""`/proc/self/smaps` parsed and split by kind: anonymous, file-backed, shared, deleted files.

The fixture is smaps text as the kernel writes it (every field, `VmFlags`, paths with
spaces, " (deleted)"), so the parser is tested on what it will read, not on a summary.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from simsearch.shard.smaps import Mapping, kind_of, parse_smaps, summarize

CACHE = "/var/cache/simsearch-shard-0"
V1 = f"{CACHE}/default/index/default/versions/v1"
KIB = 1024


def block(header: str, size: int, rss: int, anonymous: int, referenced: int) -> str:
    """One mapping as smaps prints it (sizes in kB), with the fields the parser skips."""
    return f"""{header}
Size:               {size:6d} kB
KernelPageSize:        4 kB
MMUPageSize:           4 kB
Rss:                {rss:6d} kB
Pss:                {rss:6d} kB
Pss_Dirty:          {anonymous:6d} kB
Shared_Clean:          0 kB
Shared_Dirty:          0 kB
Private_Clean:      {rss - anonymous:6d} kB
Private_Dirty:      {anonymous:6d} kB
Referenced:         {referenced:6d} kB
Anonymous:          {anonymous:6d} kB
KSM:                   0 kB
LazyFree:              0 kB
AnonHugePages:         0 kB
ShmemPmdMapped:        0 kB
FilePmdMapped:         0 kB
Shared_Hugetlb:        0 kB
Private_Hugetlb:       0 kB
Swap:                  0 kB
SwapPss:               0 kB
Locked:                0 kB
THPeligible:           0
ProtectionKey:         0
VmFlags: rd mr mw me sd
"""


# (perms, path, Size, Rss, Anonymous, Referenced), sizes in kB
MAPPINGS = [
    ("r--p", "/usr/bin/python3.11", 8, 8, 0, 8),
    # a library's data segment: file-backed, its written pages copy-on-write (anonymous)
    ("rw-p", "/usr/lib/libc.so.6", 64, 40, 24, 40),
    ("rw-p", "[heap]", 4096, 3000, 3000, 2000),
    ("rw-p", "", 65536, 50000, 50000, 1000),  # plain anonymous memory has no path
    ("rw-p", "[stack]", 132, 40, 40, 40),
    ("r-xp", "[vdso]", 8, 8, 0, 8),
    ("rw-s", "/dev/shm/psm_1", 1024, 512, 0, 512),  # shared memory: resident, not anonymous
    ("r--s", f"{V1}/trained.faiss", 4096, 1024, 0, 800),
    ("r--s", f"{V1}/partitions/0000/index.faiss", 16384, 8192, 0, 4096),
    ("r--s", f"{V1}/partitions/0000/features.h5", 32768, 2048, 0, 1024),
    ("r--s", f"{V1}/partitions/0000/metadata.arrow", 1024, 256, 0, 128),
    # a dropped version's index, unlinked while still mapped
    ("r--s", f"{V1}/partitions/0001/index.faiss (deleted)", 8192, 100, 0, 0),
    ("r--s", f"{CACHE}/my coll/x/features.h5", 4096, 400, 0, 300),  # a path with spaces
    # an index file outside the cache folder is not the shard's index
    ("r--s", "/data/other/index.faiss", 1024, 64, 0, 0),
    ("r--p", f"{CACHE}/.stamps/notes", 4, 4, 0, 4),
]


def header(number: int, perms: str, path: str) -> str:
    """A mapping's first line: addresses, perms, offset, device, inode, padded path."""
    start = 0x7F1000000000 + number * 0x10000000
    inode = 900 + number if path.startswith("/") else 0
    return f"{start:x}-{start + 0x1000:x} {perms} 00000000 fe:00 {inode:<10d} {path}".rstrip()


TEXT = "".join(block(header(i, *m[:2]), *m[2:]) for i, m in enumerate(MAPPINGS))


def test_every_mapping_is_parsed_with_its_path_and_sizes() -> None:
    parsed = parse_smaps(TEXT)
    assert len(parsed) == len(MAPPINGS)
    assert parsed[1] == Mapping("/usr/lib/libc.so.6", 64 * KIB, 40 * KIB, 24 * KIB, 40 * KIB)
    assert [m.path for m in parsed[2:6]] == ["[heap]", "", "[stack]", "[vdso]"]
    assert parsed[11].path == f"{V1}/partitions/0001/index.faiss (deleted)"
    assert parsed[12].path == f"{CACHE}/my coll/x/features.h5"
    assert [m.is_file for m in parsed[2:7]] == [False, False, False, False, True]


def test_a_real_smaps_parses_to_what_smaps_rollup_says() -> None:
    rollup = Path("/proc/self/smaps_rollup")
    if not rollup.is_file():
        pytest.skip("no /proc/self/smaps_rollup on this system")
    text, rolled = Path("/proc/self/smaps").read_text(), rollup.read_text()
    totals = {line.split(":")[0]: int(line.split()[1]) * KIB for line in rolled.splitlines()[1:]}
    reading = summarize(parse_smaps(text), CACHE)
    # both read at nearly the same moment: only what this test allocates in between differs
    assert reading.anonymous == pytest.approx(totals["Anonymous"], rel=0.05)
    assert reading.file == pytest.approx(totals["Rss"] - totals["Anonymous"], rel=0.05)


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        (f"{V1}/trained.faiss", "codes"),
        (f"{V1}/partitions/0003/index.faiss", "codes"),
        (f"{V1}/partitions/0003/index.faiss (deleted)", "codes"),
        (f"{V1}/partitions/0003/features.h5", "features"),
        (f"{V1}/partitions/0003/features.h5 (deleted)", "features"),
        (f"{V1}/partitions/0003/metadata.arrow", "metadata"),
        (f"{V1}/partitions/0003/manifest.json", "other"),
        ("/data/other/index.faiss", "other"),
        (f"{CACHE}-old/default/features.h5", "other"),  # a sibling folder is not the cache
        ("/usr/lib/libfaiss.so", "other"),
    ],
)
def test_files_are_classified_by_name_inside_the_cache_only(path: str, kind: str) -> None:
    assert kind_of(path, CACHE) == kind
    assert kind_of(path, CACHE + "/") == kind


def test_the_sums_split_anonymous_file_and_kinds() -> None:
    reading = summarize(parse_smaps(TEXT), CACHE)
    anonymous = sum(m[4] for m in MAPPINGS)
    assert reading.anonymous == anonymous * KIB
    assert reading.file == (sum(m[3] for m in MAPPINGS) - anonymous) * KIB
    assert reading.mapped == {
        "codes": (4096 + 16384 + 8192) * KIB,
        "features": (32768 + 4096) * KIB,
        "metadata": 1024 * KIB,
        "other": (8 + 64 + 1024 + 1024 + 4) * KIB,  # files only: not [heap], [stack], [vdso]
    }
    assert reading.resident == {
        "codes": (1024 + 8192 + 100) * KIB,
        "features": (2048 + 400) * KIB,
        "metadata": 256 * KIB,
        "other": (8 + 16 + 512 + 64 + 4) * KIB,  # libc's anonymous pages are not file pages
    }
    assert reading.referenced == {
        "codes": (800 + 4096) * KIB,
        "features": (1024 + 300) * KIB,
        "metadata": 128 * KIB,
        "other": (8 + 40 + 512 + 0 + 4) * KIB,
    }


def test_an_empty_text_is_no_memory_and_every_kind_is_there() -> None:
    reading = summarize(parse_smaps(""), CACHE)
    assert (reading.anonymous, reading.file) == (0, 0)
    assert (
        set(reading.mapped) == set(reading.resident) == {"codes", "features", "metadata", "other"}
    )
