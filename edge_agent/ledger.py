"""Which frames were sent, and which results belong to which frame (pure; no I/O).

The edge stamps frame ``seq`` by its :class:`FrameClock`; the worker echoes the pts it
decoded, so a result maps to exactly one captured frame and its capture time.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from mobieye.clock import FrameClock
from mobieye.messages import Result


@dataclass(frozen=True)
class SentFrame:
    seq: int
    pts: int
    capture_s: float
    index: int = 0  # the source's frame number


@dataclass(frozen=True)
class Match:
    frame: SentFrame
    latency_ms: float
    in_order: bool  # False: an older frame's result arrived after a newer one's


class FrameLedger:
    """Remembers sent frames for ``keep_s`` seconds (bounded), matches results to them."""

    def __init__(self, clock: FrameClock, keep_s: float = 10.0, max_frames: int = 4096) -> None:
        self.clock = clock
        self.keep_s = keep_s
        self.max_frames = max_frames
        self._frames: OrderedDict[int, SentFrame] = OrderedDict()
        self.last_seq = -1
        self.unmatched = 0
        self.out_of_order = 0
        self._late_cursor = -1  # frames up to this seq were already reported late

    def pts_for(self, seq: int) -> int:
        return self.clock.pts(seq)

    def sent(self, seq: int, capture_s: float, index: int = 0) -> SentFrame:
        frame = SentFrame(seq, self.pts_for(seq), capture_s, index)
        self._frames[frame.pts] = frame
        while len(self._frames) > self.max_frames:
            self._frames.popitem(last=False)
        return frame

    def match(self, result: Result, now_s: float) -> Match | None:
        self._expire(now_s)
        frame = self._frames.pop(result.pts, None)
        if frame is None:
            self.unmatched += 1
            return None
        in_order = frame.seq > self.last_seq
        if in_order:
            self.last_seq = frame.seq
        else:
            self.out_of_order += 1
        return Match(frame, (now_s - frame.capture_s) * 1000, in_order)

    @property
    def late_cursor(self) -> int:
        """Every frame up to this seq was answered in time or already reported late."""
        return self._late_cursor

    def late_frames(self, now_s: float, deadline_s: float) -> list[SentFrame]:
        """Frames still without a result ``deadline_s`` after capture; each reported once."""
        late = []
        for frame in self._frames.values():
            if frame.capture_s + deadline_s > now_s:
                break
            if frame.seq > self._late_cursor:
                late.append(frame)
        if late:
            self._late_cursor = late[-1].seq
        return late

    def _expire(self, now_s: float) -> None:
        while self._frames:
            first = next(iter(self._frames.values()))
            if now_s - first.capture_s <= self.keep_s:
                break
            self._frames.popitem(last=False)
