"""Replay: an edge agent's source and track that send a clip encoded once
(edge_agent/encoded_clip.py), so a load generator runs many streams for little CPU each: no
capture, no scaling, no encoding; aiortc only packetises, encrypts and paces.

Everything else is the edge agent's own (data channel, ledger, latency reports, results,
report, failover), so a replayed stream is measured and scored as a captured one is. What
differs: its size and bitrate are the clip's (EdgeController keeps it at level 0: only the
model is chosen), and it cannot answer a keyframe request before the clip's next keyframe.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av.packet import Packet

from edge_agent.encoded_clip import EncodedClip
from edge_agent.sources import CapturedFrame, SourceSpec
from mobieye.clock import RTP_CLOCK_HZ, FrameClock

TIME_BASE = Fraction(1, RTP_CLOCK_HZ)
MAX_LATE_FRAMES = 2  # further behind its schedule than this, a replay re-times (no burst)


class ReplaySource:
    """The clip as an edge agent's source: looping, paced at its frame rate, numbered with
    the agent's ``seq`` across reconnections (a new track starts at the next keyframe)."""

    reopening = False
    reopens = 0

    def __init__(
        self,
        clip: EncodedClip,
        video: Path,
        fps: float | None = None,
        keep_timeline: bool = False,
    ) -> None:
        """``fps``: the pace to send at (default the clip's own; a 25 fps clip sent at 30
        plays faster, and is scored by clip frame all the same)."""
        self.clip = clip
        self.spec = SourceSpec("file", str(video))
        self.fps = fps or clip.fps
        self.target_fps = self.fps
        self.width, self.height = clip.width, clip.height
        self.max_width: int | None = None
        self.captured = 0
        self.last_frame_s: float | None = None
        self.timeline: list[tuple[int, int, float]] | None = [] if keep_timeline else None
        self.ended = threading.Event()  # a replay loops: it ends only when stopped
        self.stopped = False
        self._seq = 0
        self._index = 0
        self._due_s: float | None = None

    def start(self, loop: asyncio.AbstractEventLoop, slot: object) -> None:
        """Nothing to start: the track paces itself."""

    def stop(self) -> None:
        self.stopped = True
        self.ended.set()

    def restart(self) -> None:
        """A new receiver: continue at the clip's next keyframe, the only frame it can decode."""
        self._index = self.clip.next_keyframe(self._index)

    async def next_frame(self) -> tuple[int, int, float]:
        """Wait for the next frame's moment; its (seq, clip index, send time)."""
        now = time.monotonic()
        if self._due_s is None or now - self._due_s > MAX_LATE_FRAMES / self.fps:
            self._due_s = now  # starting, or starved: re-time rather than burst
        elif self._due_s > now:
            await asyncio.sleep(self._due_s - now)
        sent_s = time.monotonic()
        seq, index = self._seq, self._index
        self._seq += 1
        self._index = (self._index + 1) % len(self.clip)
        self._due_s += 1 / self.fps
        self.captured += 1
        self.last_frame_s = sent_s
        if self.timeline is not None:
            self.timeline.append((seq, index, sent_s))
        return seq, index, sent_s


class ReplayTrack(MediaStreamTrack):
    """Hands aiortc the clip's packets (it packs them without encoding), stamped
    ``pts = seq * ticks`` like captured frames so results map back."""

    kind = "video"

    def __init__(
        self,
        source: ReplaySource,
        clock: FrameClock,
        on_sent: Callable[[CapturedFrame], None],
        paused: bool = False,
    ) -> None:
        super().__init__()
        self.source = source
        self.clock = clock
        self._on_sent = on_sent
        self.encode_wait_ms = 0.0  # nothing is encoded
        self._go = asyncio.Event()  # as CaptureTrack's: paused ahead of a move
        if not paused:
            self.resume()

    def resume(self) -> None:
        if not self._go.is_set():
            self.source.restart()
            self._go.set()

    def pause(self) -> None:
        self._go.clear()

    async def recv(self) -> Packet[Any]:
        await self._go.wait()
        if self.source.stopped:
            self.stop()
            raise MediaStreamError
        seq, index, sent_s = await self.source.next_frame()
        packet: Packet[Any] = av.Packet(self.source.clip.packets[index])
        packet.pts = self.clock.pts(seq)
        packet.time_base = TIME_BASE
        self._on_sent(CapturedFrame(seq=seq, capture_s=sent_s, image=None, index=index))
        return packet
