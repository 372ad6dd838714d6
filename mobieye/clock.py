"""Time in MobiEye: how a stream's frames are stamped, and where pure code gets the time.

:class:`FrameClock`, the same on both sides: frame ``seq`` leaves the edge with
``pts = seq * ticks`` on the 90 kHz RTP clock, and the worker reads ``seq`` back from the pts it
decoded. Its results carry both, so the edge finds the captured frame (and its capture time)
and anyone can tell how many frames old a box is.

:class:`Clocks`: the time sources that pure state objects take instead of calling ``time``,
so tests turn the clock themselves.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

TimeSource = Callable[[], float]


@dataclass(frozen=True)
class Clocks:
    """``monotonic`` for spans, ``wall`` (Unix time) for what goes on the wire."""

    monotonic: TimeSource = time.monotonic
    wall: TimeSource = time.time


RTP_CLOCK_HZ = 90_000
DEFAULT_TICKS = 3000  # 30 fps


@dataclass(frozen=True)
class FrameClock:
    ticks: int = DEFAULT_TICKS
    """RTP clock ticks per frame."""

    def __post_init__(self) -> None:
        if not 1 <= self.ticks <= RTP_CLOCK_HZ:
            raise ValueError(f"frame ticks must be 1..{RTP_CLOCK_HZ}, got {self.ticks}")

    @classmethod
    def for_fps(cls, fps: float) -> FrameClock:
        return cls(max(1, min(RTP_CLOCK_HZ, round(RTP_CLOCK_HZ / fps))))

    @property
    def fps(self) -> float:
        return RTP_CLOCK_HZ / self.ticks

    def pts(self, seq: int) -> int:
        return seq * self.ticks

    def seq(self, pts: int) -> int:
        return pts // self.ticks


def frames_between(earlier_seq: int | None, later_seq: int) -> int | None:
    """How many frames ``later_seq`` comes after ``earlier_seq`` (None: no earlier one)."""
    return None if earlier_seq is None else max(0, later_seq - earlier_seq)
