"""The WebRTC video track the edge sends: captured frames, stamped so results map back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from fractions import Fraction

from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

from edge_agent.sources import CapturedFrame
from mobieye.clock import RTP_CLOCK_HZ, FrameClock
from mobieye.slot import LatestSlot, SlotClosed

TIME_BASE = Fraction(1, RTP_CLOCK_HZ)


class CaptureTrack(MediaStreamTrack):
    kind = "video"

    def __init__(
        self,
        slot: LatestSlot[CapturedFrame],
        clock: FrameClock,
        on_sent: Callable[[CapturedFrame], None],
        paused: bool = False,
    ) -> None:
        super().__init__()
        self._slot = slot
        self.clock = clock
        self._on_sent = on_sent
        self.encode_wait_ms = 0.0
        # Paused: a connection made ahead of a move (the worker drains) takes no frames until
        # it becomes the stream's; the one it replaces is paused for good then.
        self._go = asyncio.Event()
        if not paused:
            self._go.set()

    def resume(self) -> None:
        self._go.set()

    def pause(self) -> None:
        self._go.clear()

    async def recv(self) -> VideoFrame:
        while True:
            await self._go.wait()
            try:
                captured = await self._slot.get()
            except SlotClosed:
                self.stop()
                raise MediaStreamError from None
            if self._go.is_set():
                break
            if not len(self._slot):  # paused while waiting: the next track sends this one
                self._slot.put(captured)
        assert captured.image is not None  # captured frames have one (replayed: ReplayTrack)
        frame = VideoFrame.from_ndarray(captured.image, format="bgr24")
        # pts on the 90 kHz RTP clock; with the zero-origin sender patch it is the RTP timestamp.
        frame.pts = self.clock.pts(captured.seq)
        frame.time_base = TIME_BASE
        self.encode_wait_ms = (time.monotonic() - captured.capture_s) * 1000
        self._on_sent(captured)
        return frame
