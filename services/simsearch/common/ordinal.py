"""A StatefulSet pod's ordinal, read from its name (`release-shard-3` → 3).

The shard reads its own ordinal from its pod name (settings) and the router reads each
shard's from the EndpointSlices it watches (logs, stats): one parser, here, so both
sides agree. Kept apart from `common/kube.py` so the shard's settings need not import the
Kubernetes client.
"""

from __future__ import annotations

import re

__all__ = ["parse_ordinal"]

# A StatefulSet pod is "<statefulset>-<ordinal>"; 9 digits is plenty and keeps ints small.
_ORDINAL_RE = re.compile(r"^.+-(\d{1,9})$")


def parse_ordinal(name: str) -> int | None:
    """The ordinal of a StatefulSet pod name (`release-shard-3` → 3), None if it has none."""
    match = _ORDINAL_RE.match(name.strip())
    return int(match.group(1)) if match else None
