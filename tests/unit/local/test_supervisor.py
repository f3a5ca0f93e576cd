"""The local supervisor's restart backoff: doubling per role, capped, reset after a stable run."""

from __future__ import annotations

from simsearch.local.supervisor import Backoff


def test_restarts_back_off_per_role_and_reset_after_a_stable_run() -> None:
    backoff = Backoff(first_s=1, max_s=4, stable_s=60)
    assert backoff.due("shard-0", 0)
    backoff.started("shard-0", 0)  # waits 1 s
    assert not backoff.due("shard-0", 0.5) and backoff.due("shard-0", 1.0)
    assert backoff.due("router", 0.5)  # another role is not held back
    backoff.started("shard-0", 1.0)  # waits 2 s
    assert not backoff.due("shard-0", 2.9) and backoff.due("shard-0", 3.0)
    backoff.started("shard-0", 3.0)  # 4 s
    backoff.started("shard-0", 7.0)  # capped at 4 s
    assert not backoff.due("shard-0", 10.9) and backoff.due("shard-0", 11.0)
    # up for a minute since its last start: the next crash starts over at 1 s
    assert backoff.due("shard-0", 67.0)
    backoff.started("shard-0", 67.0)
    assert backoff.due("shard-0", 68.0)
