"""Live recall over a sliding time window, per collection and version, and its drift flag.

Each (collection, version) keeps the recall of its recent samples, stamped with when the
query was answered. The mean is taken over the samples younger than the window at the
moment it is read (a scrape, `/stats`), so stale samples expire even when no new sample
arrives: a monitor that stopped sampling shows an empty window, never an old figure as if
it were current. Versions nobody serves any more are dropped with `keep_only`.

The drift flag compares the live mean with the version's build-time probe (the manifest's
`probe.recall`, which the shards report as `recall_probe`): below it by more than the
margin, with enough samples that the mean means something. Pure: time is passed in.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection
from dataclasses import dataclass, field

__all__ = ["RecallWindows", "WindowStats", "drifted"]

VersionKey = tuple[str, str]  # (collection, version)
# at most this many samples per version whatever the window and rate: bounded memory even
# with a window of a day at a high cap (the mean of 100k recent samples is as good)
_MAX_SAMPLES = 100_000


@dataclass(frozen=True)
class WindowStats:
    """The window of one version at one moment: its mean (None: empty) and sample count."""

    recall: float | None
    samples: int


@dataclass
class _Window:
    samples: deque[tuple[float, float]] = field(
        default_factory=lambda: deque(maxlen=_MAX_SAMPLES)
    )  # (answered at, recall), oldest first
    total: float = 0.0  # sum of the recalls in `samples`

    def add(self, at: float, recall: float) -> None:
        if len(self.samples) == self.samples.maxlen:
            self.total -= self.samples[0][1]  # the append below pushes the oldest out
        self.samples.append((at, recall))
        self.total += recall

    def expire(self, before: float) -> None:
        """Drop the samples answered before `before` (samples arrive in time order)."""
        while self.samples and self.samples[0][0] < before:
            self.total -= self.samples.popleft()[1]
        if not self.samples:
            self.total = 0.0  # no float residue left behind by the running sum

    def stats(self) -> WindowStats:
        n = len(self.samples)
        return WindowStats(self.total / n if n else None, n)


class RecallWindows:
    """Every version's window; one instance per router (the monitor owns it)."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._windows: dict[VersionKey, _Window] = {}

    def add(self, key: VersionKey, at: float, recall: float) -> None:
        """One sample's recall, for the query answered at `at` (monotonic seconds)."""
        self._windows.setdefault(key, _Window()).add(at, recall)

    def stats(self, now: float) -> dict[VersionKey, WindowStats]:
        """Every known version's window as of `now` (expired samples dropped first)."""
        found: dict[VersionKey, WindowStats] = {}
        for key, window in self._windows.items():
            window.expire(now - self.window_s)
            found[key] = window.stats()
        return found

    def keep_only(self, served: Collection[VersionKey]) -> None:
        """Forget the windows of versions not in `served` (their gauges disappear)."""
        for key in [k for k in self._windows if k not in served]:
            del self._windows[key]


def drifted(stats: WindowStats, baseline: float | None, margin: float, min_samples: int) -> bool:
    """Live recall is below the build-time baseline by more than `margin`, measured on at
    least `min_samples` samples (False without a baseline or with too few samples)."""
    if baseline is None or stats.recall is None or stats.samples < min_samples:
        return False
    return stats.recall < baseline - margin
