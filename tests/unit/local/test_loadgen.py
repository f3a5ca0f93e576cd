"""The load generator's bookkeeping: what counts as failed, flagged and recovered."""

from __future__ import annotations

from simsearch.local.loadgen import Sample, recovery_times, summarise


def ok(sent: float, coverage: float = 1.0, partial: bool = False, version: str = "v1") -> Sample:
    return Sample(sent, 5.0, 200, 0, version, coverage, partial, (1, 2))


def test_summary_counts_failures_and_separates_flagged_from_unflagged_partials() -> None:
    samples = [
        ok(0.0),
        ok(0.5, coverage=0.5, partial=True),
        ok(1.0, coverage=0.5, partial=False),  # a partial answer without the flag: a bug
        Sample(1.5, 1.0, 503, 0, error="no shard"),
        Sample(2.0, 1.0, 0, 0, error="ClientConnectorError"),
        ok(2.5, version="v2"),
    ]
    summary = summarise(samples)
    assert summary.sent == 6 and summary.failed == 2
    assert summary.partial_flagged == 1 and summary.partial_unflagged == 1
    assert summary.versions == {"v1": 3, "v2": 1}
    assert summary.achieved_qps == 2.0  # 5 intervals over 2.5 s
    assert len(summary.errors) == 2


def test_recovery_is_measured_per_step_until_the_last_incomplete_answer() -> None:
    samples = [ok(0.0), ok(1.2, 0.5, True), ok(2.9, 0.75, True), ok(3.5), ok(6.0), ok(7.0)]
    failed = Sample(8.5, 1.0, 0, 0, error="refused")
    assert recovery_times([*samples, failed, ok(9.0)], [1.0, 5.0, 8.0]) == [1.9, 0.0, 0.5]


def test_an_empty_load_summarises_to_zeroes() -> None:
    summary = summarise([])
    assert (summary.sent, summary.failed, summary.achieved_qps, summary.p50_ms) == (0, 0, 0.0, 0.0)
