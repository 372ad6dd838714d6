"""`mobieye bench --capacity`: how many streams a worker sustains, per mode. Pure: which stream
count to try next, and what the runs so far say; the bench runs them.

A count is sustained when its F1 against the oracle and its p95 latency both hold. The search
doubles from one stream while counts hold, then bisects between the most that held and the
fewest that failed. Runs on a shared machine are noisy, so a count that held above one that
failed does not count: the answer is the most streams that held below the first failure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MIN_F1 = 0.9


def holds(mode_figures: Mapping[str, Any], p95_ms: float, min_f1: float = MIN_F1) -> bool:
    """Whether one run of one mode sustained its streams."""
    p95 = mode_figures["latency_ms"]["p95"]
    f1 = mode_figures["f1_vs_oracle"]
    return f1 is not None and f1 >= min_f1 and p95 is not None and p95 <= p95_ms


def sustained(results: Mapping[int, bool]) -> int:
    """The most streams that held below the fewest that failed (0: not even one)."""
    failed = min((n for n, ok in results.items() if not ok), default=None)
    return max((n for n, ok in results.items() if ok and (failed is None or n < failed)), default=0)


def next_streams(results: Mapping[int, bool], max_streams: int) -> int | None:
    """The next stream count to run, or None when the answer is settled."""
    if not results:
        return 1
    failed = min((n for n, ok in results.items() if not ok), default=None)
    best = sustained(results)
    if failed is None:
        return None if best >= max_streams else min(2 * best, max_streams)
    if failed - best <= 1:
        return None
    return (best + failed) // 2
