"""The exact (brute-force) search of a shard: the recall monitor's reference answer.

`SCAN_LOCK` is held for the whole of an exact scan. The scan reads the features through
mappings of its own, made for the scan and dropped after it, so that what it touches
never counts as the foreground's working set (`memory.py`); the memory sampler takes
the same lock, so it never reads `/proc/self/smaps` while such a mapping exists.
"""

from __future__ import annotations

import threading

SCAN_LOCK = threading.Lock()
