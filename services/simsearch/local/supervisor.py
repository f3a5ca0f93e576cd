"""`simsearch up`'s supervisor: restarts a crashed role, with backoff, like the kubelet.

In the chart, Kubernetes restarts a container that dies. A local cluster had no one to
do it: a dead embedder stayed dead (and `simsearch scale` restarted only shards), so
`up` now leaves one more detached process, `simsearch supervise`, that checks every role
in `state.json` twice a second and starts a dead one again on its port with its
environment. Restarts back off per role (1, 2, 4 … 30 s, reset after a minute up), as a
CrashLoopBackOff does, so a role that cannot start does not spin the machine; each one is
counted in `state.json` (`simsearch status` shows it) and logged to `logs/supervisor.log`.

The state file is shared with `scale` and `down`, so every read-modify-write of it holds
`state.lock` (an advisory `flock`): `scale` holds it for its whole run (the supervisor
waits, and never restarts a shard `scale` is stopping), and `down` stops the supervisor
first. The supervisor exits when the state file is gone or names another supervisor.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from simsearch.common.errors import ConfigError
from simsearch.local.cluster import ClusterState, Process, alive

__all__ = ["Backoff", "locked", "supervise"]

LOCK_FILE = "state.lock"
POLL_S = 0.5

log = logging.getLogger("simsearch.supervisor")

Respawn = Callable[[ClusterState, Process], Process]


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold the cluster folder's state lock (blocking) for the `with` body."""
    with (folder / LOCK_FILE).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class Backoff:
    """Per-role restart delays: doubling from `first_s` to `max_s`, reset by `stable_s` up."""

    first_s: float = 1.0
    max_s: float = 30.0
    stable_s: float = 60.0
    _delay: dict[str, float] = field(default_factory=dict)
    _not_before: dict[str, float] = field(default_factory=dict)
    _started: dict[str, float] = field(default_factory=dict)

    def due(self, role: str, now: float) -> bool:
        """Whether a dead `role` may be started again now."""
        started = self._started.get(role)
        if started is not None and now - started >= self.stable_s:
            self._delay.pop(role, None)  # it had been up long enough: a fresh crash
        return now >= self._not_before.get(role, 0.0)

    def started(self, role: str, now: float) -> None:
        """`role` was just started again: the next restart waits longer."""
        delay = min(self._delay.get(role, self.first_s / 2) * 2, self.max_s)
        self._delay[role] = delay
        self._not_before[role] = now + delay
        self._started[role] = now


def check_once(folder: Path, respawn: Respawn, backoff: Backoff, me: int) -> bool:
    """Restart what is dead and due; False when this supervisor should exit."""
    with locked(folder):
        try:
            state = ClusterState.load(folder)
        except ConfigError:  # `down` removed the state: nothing to supervise
            return False
        if state.supervisor_pid != me:
            return False
        changed = False
        now = time.monotonic()
        for process in list(state.processes):
            if alive(process.pid) or not backoff.due(process.role, now):
                continue
            again = respawn(state, process)
            backoff.started(process.role, now)
            log.warning(
                "%s (pid %d) died; started again as pid %d (restart %d)",
                process.role,
                process.pid,
                again.pid,
                again.restarts,
            )
            changed = True
        if changed:
            state.save()
    return True


def supervise(folder: Path, respawn: Respawn, backoff: Backoff | None = None) -> None:
    """Check every `POLL_S` until the cluster is taken down."""
    backoff = backoff or Backoff()
    me = os.getpid()
    while check_once(folder, respawn, backoff, me):
        time.sleep(POLL_S)
