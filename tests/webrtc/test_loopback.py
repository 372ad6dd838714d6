"""Two real aiortc peer connections over 127.0.0.1 (ICE, DTLS, SRTP, encode, decode)."""

from __future__ import annotations

import asyncio
import math

import aiortc.rtcrtpreceiver
import pytest
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket

from mobieye.webrtc.ice import confine_to_loopback
from mobieye.webrtc.jitter import (
    install_low_latency_jitter_buffer,
    jitter_buffer_of,
    uninstall_low_latency_jitter_buffer,
)
from mobieye.webrtc.loopback import PacedVideoTrack, connect_loopback
from mobieye.webrtc.measure import measure_loopback_latency
from mobieye.webrtc.timestamps import (
    install_receiver_absolute_timestamps,
    install_sender_zero_timestamp_origin,
)

FRAMES = 30


async def _receive_pts(codec: str, count: int, start_pts: int) -> tuple[list[int], list[int]]:
    sent: list[int] = []
    track = PacedVideoTrack(on_frame=sent.append, start_pts=start_pts)
    session = await connect_loopback(track, codec)
    try:
        received = []
        for _ in range(count):
            frame = await asyncio.wait_for(session.remote_track.recv(), timeout=5.0)
            assert frame.pts is not None
            received.append(frame.pts)
    finally:
        await session.close()
    return sent, received


@pytest.mark.asyncio
@pytest.mark.timeout(60)
@pytest.mark.parametrize("codec", ["vp8", "h264"])
async def test_worker_sees_the_edge_pts_exactly(codec: str) -> None:
    confine_to_loopback()
    install_sender_zero_timestamp_origin()
    install_receiver_absolute_timestamps()
    install_low_latency_jitter_buffer()
    # An edge that has been streaming a while: its pts crosses 2**32 during the test.
    start = (1 << 32) - 10 * 3000
    sent, received = await _receive_pts(codec, FRAMES, start_pts=start)
    assert received == [start + k * 3000 for k in range(FRAMES)]
    assert received == sent[:FRAMES]


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_stock_aiortc_loses_the_edge_pts() -> None:
    # Why the patches exist: stock aiortc rebases the worker's pts to its first frame.
    confine_to_loopback()
    sent, received = await _receive_pts("vp8", 6, start_pts=123 * 3000)
    assert sent[0] == 123 * 3000 and received[0] == 0


class _RecordingBuffer:
    """Wraps whichever buffer aiortc builds; notes, per emitted frame, which packet released it."""

    def __init__(self, inner: JitterBuffer, released_by_own_packet: list[bool]) -> None:
        self._inner = inner
        self._log = released_by_own_packet

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        pli, frame = self._inner.add(packet)
        if frame is not None:
            # Own packet: the frame's marker (or a late packet of it), before any of the next frame.
            self._log.append(frame.timestamp == packet.timestamp)
        return pli, frame


async def _release_log(low_latency: bool) -> list[bool]:
    if low_latency:
        install_low_latency_jitter_buffer()
    else:
        uninstall_low_latency_jitter_buffer()
    make_buffer = aiortc.rtcrtpreceiver.JitterBuffer  # type: ignore[attr-defined]
    log: list[bool] = []

    def recording(capacity: int, prefetch: int = 0, is_video: bool = False) -> object:
        inner = make_buffer(capacity=capacity, prefetch=prefetch, is_video=is_video)
        return _RecordingBuffer(inner, log) if is_video else inner

    setattr(aiortc.rtcrtpreceiver, "JitterBuffer", recording)  # noqa: B010
    session = await connect_loopback(PacedVideoTrack(), "vp8")
    try:
        for _ in range(FRAMES):
            await asyncio.wait_for(session.remote_track.recv(), timeout=5.0)
    finally:
        await session.close()
    return log


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_low_latency_buffer_releases_frames_before_the_next_frame_starts() -> None:
    confine_to_loopback()
    stock = await _release_log(low_latency=False)
    low_latency = await _release_log(low_latency=True)
    assert len(stock) >= FRAMES and len(low_latency) >= FRAMES
    # Stock aiortc always waits for a packet of the next frame: a whole frame interval.
    assert not any(stock)
    assert all(low_latency)


@pytest.mark.timeout(60)
def test_measure_loopback_latency_reports() -> None:
    report = measure_loopback_latency(True, seconds=1.0, codec="vp8", warmup=0.3)
    assert report["frames_measured"] >= 20
    assert 0 < report["p50_ms"] <= report["p95_ms"] <= report["max_ms"]
    assert report["frames_on_marker"] > 0 and report["packets_dropped"] == 0
    assert not math.isnan(report["mean_ms"])
    # It leaves aiortc as it found it.
    assert aiortc.rtcrtpreceiver.JitterBuffer is JitterBuffer  # type: ignore[attr-defined]


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_receiver_buffer_is_reachable_during_a_session() -> None:
    confine_to_loopback()
    install_low_latency_jitter_buffer()
    session = await connect_loopback(PacedVideoTrack(), "h264")
    try:
        for _ in range(5):
            await asyncio.wait_for(session.remote_track.recv(), timeout=5.0)
        buffer = jitter_buffer_of(session.receiver)
        assert buffer is not None and buffer.frames_on_marker >= 5
        assert not buffer.damaged
    finally:
        await session.close()
