"""The fault matrix's answer check: exact top-k of *some* set of answered partitions."""

from __future__ import annotations

import numpy as np

from tests.support.truth import is_exact

P = 4
RANKED = np.arange(40, dtype=np.int64)  # id i lives in partition i % 4; best first


def test_a_complete_answer_must_be_the_true_top_k() -> None:
    assert is_exact(RANKED, [0, 1, 2, 3, 4], P, P, 5)
    assert not is_exact(RANKED, [0, 1, 2, 4, 3], P, P, 5)  # order matters
    assert not is_exact(RANKED, [0, 1, 2, 3, 5], P, P, 5)  # 4 skipped, its partition answered


def test_a_partial_answer_is_checked_against_the_partitions_it_can_have() -> None:
    without_1 = [0, 2, 3, 4, 6]  # partition 1 missing
    assert is_exact(RANKED, without_1, 3, P, 5)
    assert not is_exact(RANKED, without_1, 4, P, 5)  # claims all four answered
    assert not is_exact(RANKED, [0, 2, 3, 4, 5], 3, P, 5)  # 1 skipped yet 5 (partition 1) given
    assert not is_exact(RANKED, [0, 4, 8, 12, 16], 2, P, 5)  # only one partition could be


def test_a_short_answer_must_have_exhausted_its_partitions() -> None:
    assert is_exact(RANKED, list(range(0, 40, 4)), 1, P, 20)
    assert not is_exact(RANKED, list(range(0, 36, 4)), 1, P, 20)  # 36 left out
