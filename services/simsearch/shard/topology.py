"""How many shards exist (N), which decides the partitions each shard holds.

One small interface, `Topology.replicas()`, with a source per deployment:

* `StaticTopology` — a fixed number from the settings (`SIMSEARCH_REPLICAS`);
* `FileTopology` — a JSON file `{"replicas": N}` that `simsearch scale` rewrites (local
  mode); re-read on every call, so a scale is picked up on the next poll;
* a Kubernetes source (the StatefulSet's `spec.replicas`) plugs in behind the same
  interface later.

A source that cannot be read keeps its last good value: a shard that suddenly believed N
had changed would load or drop partitions for nothing, so a torn or missing file is
logged and ignored rather than acted upon.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Protocol

from simsearch.common.errors import (
    ConfigError,
    TopologyUnknown,
)

__all__ = [
    "FileTopology",
    "StaticTopology",
    "Topology",
    "TopologyUnknown",
    "read_replicas",
]

log = logging.getLogger(__name__)


class Topology(Protocol):
    """Where a shard learns the current number of shards."""

    def replicas(self) -> int:
        """The number of shards (≥ 1) as this source sees it now; `TopologyUnknown` if
        the source has never been readable."""
        ...

    def describe(self) -> str:
        """A short description for logs and `/info`."""
        ...


class StaticTopology:
    """A shard count fixed at start-up."""

    def __init__(self, replicas: int) -> None:
        if isinstance(replicas, bool) or replicas < 1:
            raise ConfigError(f"SIMSEARCH_REPLICAS must be at least 1, got {replicas!r}")
        self._replicas = replicas

    def replicas(self) -> int:
        return self._replicas

    def describe(self) -> str:
        return f"static({self._replicas})"


def read_replicas(path: Path) -> int:
    """`replicas` from a topology file; ValueError/OSError say what is wrong with it."""
    data = json.loads(path.read_text(encoding="utf-8"))
    value = data.get("replicas") if isinstance(data, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'expected {{"replicas": <int >= 1>}}, got {str(data)[:80]!r}')
    return value


class FileTopology:
    """The shard count from a JSON file, re-read on every call; last good value on errors.

    The file may appear after the shard starts (`simsearch up` writes it once the shard
    processes are spawned): until its first good read `replicas()` raises
    `TopologyUnknown`, which keeps the shard not ready. A missing *folder* is a typo in
    the setting, though, and a `ConfigError` at start-up.
    """

    def __init__(self, path: Path) -> None:
        if not path.parent.is_dir():
            raise ConfigError(
                f"SIMSEARCH_TOPOLOGY_FILE {path}: the folder {path.parent} does not exist"
            )
        self.path = path
        self._last: int | None = None
        self._last_error: str | None = None

    def replicas(self) -> int:
        try:
            value = read_replicas(self.path)
        except (OSError, ValueError) as err:
            reason = _why(err)
            if self._last is None:
                raise TopologyUnknown(f"topology file {self.path}: {reason}") from err
            if reason != self._last_error:  # once per distinct problem, not every poll
                log.warning(
                    "topology file %s unreadable (%s); keeping replicas=%d",
                    self.path,
                    reason,
                    self._last,
                )
                self._last_error = reason
            return self._last
        if value != self._last:
            log.info("topology file %s: replicas %s -> %d", self.path, self._last, value)
        self._last, self._last_error = value, None
        return value

    def describe(self) -> str:
        return f"file({self.path})"


def _why(err: Exception) -> str:
    if isinstance(err, FileNotFoundError):
        return "missing"
    if isinstance(err, OSError):
        return err.strerror or str(err)
    return str(err)
