"""How long a client call may take: connect and read timeouts, and one deadline per call.

httpx's timeouts bound one step (connecting, one read); a call may take several attempts
(`retry.py`), so each call also has an overall deadline, and every attempt's timeouts are
cut to what is left of it. A call that runs out of deadline raises `TimedOut`, or the
last error it got when there was one (the wait before the next attempt would pass the
deadline, or did).
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

__all__ = ["Timeouts"]


@dataclass(frozen=True)
class Timeouts:
    """Seconds. `deadline_s` bounds a whole call, retries and their waits included.

    The read timeout is per read (a streamed image download may take longer in total,
    as long as each chunk comes in time); searches by image wait for the embedder, hence
    a generous default.
    """

    connect_s: float = 5.0
    read_s: float = 30.0
    deadline_s: float = 60.0

    def __post_init__(self) -> None:
        for name in ("connect_s", "read_s", "deadline_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Timeouts.{name} must be > 0, got {getattr(self, name)!r}")

    def within(self, remaining_s: float) -> httpx.Timeout:
        """httpx's timeouts for one attempt with `remaining_s` of the deadline left."""
        left = max(remaining_s, 0.001)
        read = min(self.read_s, left)
        return httpx.Timeout(
            read, connect=min(self.connect_s, left), pool=min(self.connect_s, left)
        )
