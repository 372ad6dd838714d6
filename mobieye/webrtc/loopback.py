"""Two aiortc peer connections in one process, talking over 127.0.0.1 only.

Used by the integration tests and the latency benchmark.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import numpy.typing as npt
from aiortc import (
    MediaStreamTrack,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCSessionDescription,
    VideoStreamTrack,
)
from av import VideoFrame

from .codecs import prefer_codec
from .ice import confine_to_loopback, filter_sdp_candidates, rtc_configuration

VIDEO_CLOCK_RATE = 90_000
VIDEO_TIME_BASE = Fraction(1, VIDEO_CLOCK_RATE)
_CONNECT_TIMEOUT_S = 10.0


def _test_pattern(width: int, height: int, count: int) -> list[npt.NDArray[np.uint8]]:
    """yuv420p planes of a moving pattern: enough texture and motion for realistic frame sizes."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = []
    for k in range(count):
        luma = 128 + 60 * np.sin((x + 6 * k) / 23.0) * np.cos((y + 3 * k) / 17.0)
        side = height // 4
        left = (k * 11) % (width - side)
        luma[side : 2 * side, left : left + side] = 235.0
        chroma = np.full((height // 2, width), 128, dtype=np.float32)
        chroma[: height // 4, :] += 20 * np.sin((x[::2, :] + 4 * k) / 31.0)[: height // 4, :]
        frames.append(np.vstack([luma, chroma]).clip(0, 255).astype(np.uint8))
    return frames


class PacedVideoTrack(VideoStreamTrack):
    """Test video paced in real time; frame k has pts start_pts + k * 90000 / fps (1/90000).

    ``on_frame(pts)`` runs when a frame is handed to the sender (for latency stamps).
    """

    def __init__(
        self,
        width: int = 640,
        height: int = 480,
        fps: int = 30,
        on_frame: Callable[[int], None] | None = None,
        start_pts: int = 0,
    ) -> None:
        super().__init__()
        if VIDEO_CLOCK_RATE % fps:
            raise ValueError(f"fps {fps} does not divide the 90 kHz clock")
        self._pattern = _test_pattern(width, height, count=fps)
        self._period = 1.0 / fps
        self._ticks = VIDEO_CLOCK_RATE // fps
        self._on_frame = on_frame
        self._start_pts = start_pts
        self._count = 0
        self._start = math.nan

    @property
    def frames_sent(self) -> int:
        return self._count

    async def recv(self) -> VideoFrame:
        if self._count == 0:
            self._start = time.monotonic()
        delay = self._start + self._count * self._period - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        # A fresh frame each time: aiortc's VP8 encoder marks forced keyframes on the frame object.
        frame = VideoFrame.from_ndarray(self._pattern[self._count % len(self._pattern)], "yuv420p")
        frame.pts = self._start_pts + self._count * self._ticks
        frame.time_base = VIDEO_TIME_BASE
        self._count += 1
        if self._on_frame is not None:
            self._on_frame(frame.pts)
        return frame


@dataclass
class LoopbackSession:
    sender_pc: RTCPeerConnection
    receiver_pc: RTCPeerConnection
    remote_track: MediaStreamTrack
    receiver: RTCRtpReceiver

    async def close(self) -> None:
        await self.sender_pc.close()
        await self.receiver_pc.close()


def _loopback_only(description: RTCSessionDescription) -> RTCSessionDescription:
    sdp = filter_sdp_candidates(description.sdp, loopback_only=True)
    return RTCSessionDescription(sdp=sdp, type=description.type)


async def connect_loopback(track: MediaStreamTrack, codec: str = "vp8") -> LoopbackSession:
    """Send ``track`` from one peer connection to another over loopback with ``codec``.

    Call aiortc patches (jitter buffer, timestamps) before this: receivers are built here.
    """
    confine_to_loopback()
    sender_pc = RTCPeerConnection(rtc_configuration([]))
    receiver_pc = RTCPeerConnection(rtc_configuration([]))
    try:
        transceiver = sender_pc.addTransceiver(track, direction="sendonly")
        prefer_codec(transceiver, "video", codec, exclusive=True)
        arrived: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()
        receiver_pc.on("track", arrived.set_result)

        await sender_pc.setLocalDescription(await sender_pc.createOffer())
        await receiver_pc.setRemoteDescription(_loopback_only(sender_pc.localDescription))
        await receiver_pc.setLocalDescription(await receiver_pc.createAnswer())
        await sender_pc.setRemoteDescription(_loopback_only(receiver_pc.localDescription))
        remote_track = await asyncio.wait_for(arrived, _CONNECT_TIMEOUT_S)
        receiver = next(
            t.receiver for t in receiver_pc.getTransceivers() if t.receiver.track is remote_track
        )
    except BaseException:
        await sender_pc.close()
        await receiver_pc.close()
        raise
    return LoopbackSession(sender_pc, receiver_pc, remote_track, receiver)
