"""Whether a search answer is exactly right for the partitions it says answered.

A partial answer names how many partitions answered, not which; the check does not need
to know: it asks whether *some* set of that many partitions has exactly these ids as its
top-k, which brute force over the whole ranking decides in one walk.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from simsearch.common.ids import partition_of_many

__all__ = ["is_exact"]


def is_exact(
    ranked: np.ndarray, got: Sequence[int], answered: int, partitions: int, k: int
) -> bool:
    """Whether `got` is the exact top-k of *some* `answered` of the `partitions` partitions.

    Walks the true ranking: every id better than the next returned one must come from a
    partition that did not answer (X), every returned id's partition did answer (R). The
    answer is exact for some answered set A iff R ∩ X = ∅ and |R| ≤ answered ≤ P − |X|.
    """
    owner = {
        int(i): int(p) for i, p in zip(ranked, partition_of_many(ranked, partitions), strict=True)
    }
    answered_set: set[int] = set()
    missing: set[int] = set()
    j = 0
    for candidate in (int(c) for c in ranked):
        if j < len(got) and candidate == got[j]:
            answered_set.add(owner[candidate])
            j += 1
        elif j < len(got) or len(got) < k:  # a short answer must have exhausted its set
            missing.add(owner[candidate])
        else:
            break
    return (
        j == len(got)
        and not answered_set & missing
        and len(answered_set) <= answered <= partitions - len(missing)
    )
