"""What each captured frame shows, given when results arrived (pure; no I/O).

A frame is shown at its deadline (capture time + SLA) at the latest. It shows its own result if
that arrived in time; otherwise the newest earlier result that had arrived by then (the on-device
fallback: a late cloud answer never leaves a frame without boxes); otherwise nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from mobieye.detections import Detections

Shown = Literal["own", "fallback", "none"]


@dataclass(frozen=True, eq=False)  # holds arrays: compared by identity only
class ArrivedResult:
    """A result as the edge received it: which frame, when, and its boxes (normalised)."""

    seq: int
    arrival_s: float
    boxes: Detections


@dataclass(frozen=True, eq=False)
class Displayed:
    seq: int
    shown: Shown
    result: ArrivedResult | None  # the result whose boxes the frame shows


def display_timeline(
    frames: Sequence[tuple[int, float]], results: Sequence[ArrivedResult], deadline_ms: float
) -> list[Displayed]:
    """For frames ``(seq, capture_s)`` in capture order, what each one displays."""
    own = {r.seq: r for r in results}
    by_arrival = sorted(results, key=lambda r: r.arrival_s)
    newest: ArrivedResult | None = None
    i = 0
    out: list[Displayed] = []
    for seq, capture_s in frames:
        deadline = capture_s + deadline_ms / 1000
        while i < len(by_arrival) and by_arrival[i].arrival_s <= deadline:
            r = by_arrival[i]
            if newest is None or r.seq > newest.seq:
                newest = r
            i += 1
        mine = own.get(seq)
        if mine is not None and mine.arrival_s <= deadline:
            out.append(Displayed(seq, "own", mine))
        elif newest is not None:
            out.append(Displayed(seq, "fallback", newest))
        else:
            out.append(Displayed(seq, "none", None))
    return out
