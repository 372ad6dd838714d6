"""One-way latency of aiortc over loopback: stock jitter buffer vs LowLatencyJitterBuffer.

Latency is from the moment the sender's track hands a frame to aiortc (before encoding) to the
moment the receiving track returns the decoded frame: encode, packetize, loopback, jitter
buffer, decode. Frames are matched by pts, which needs the timestamp patches.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypedDict

import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender

from mobieye.stats import percentile

from .jitter import (
    install_low_latency_jitter_buffer,
    jitter_buffer_of,
    uninstall_low_latency_jitter_buffer,
)
from .loopback import PacedVideoTrack, connect_loopback
from .timestamps import install_receiver_absolute_timestamps, install_sender_zero_timestamp_origin


class LatencyReport(TypedDict):
    codec: str
    low_latency: bool
    seconds: float
    frames_sent: int
    frames_received: int
    frames_measured: int
    p50_ms: float
    p95_ms: float
    mean_ms: float
    max_ms: float
    # LowLatencyJitterBuffer counters; -1 with the stock buffer.
    frames_on_marker: int
    frames_on_next_frame: int
    packets_dropped: int


_PATCHED_GLOBALS = (
    (aiortc.rtcrtpreceiver, "JitterBuffer"),
    (aiortc.rtcrtpreceiver, "TimestampMapper"),
    (aiortc.rtcrtpsender, "uint32_add"),
)


@contextmanager
def _restoring_aiortc_patches() -> Iterator[None]:
    # The benchmark must leave the process's aiortc exactly as it found it.
    saved = [(module, name, getattr(module, name)) for module, name in _PATCHED_GLOBALS]
    try:
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else value


async def _measure(
    low_latency: bool, seconds: float, codec: str, warmup: float, fps: int
) -> LatencyReport:
    sent_at: dict[int, float] = {}

    def stamp_sent(pts: int) -> None:
        sent_at[pts] = time.monotonic()

    track = PacedVideoTrack(fps=fps, on_frame=stamp_sent)
    session = await connect_loopback(track, codec)
    latencies_ms: list[float] = []
    received = 0
    try:
        await asyncio.wait_for(session.remote_track.recv(), timeout=10.0)
        received += 1
        measure_from = time.monotonic() + warmup
        while time.monotonic() < measure_from + seconds:
            frame = await asyncio.wait_for(session.remote_track.recv(), timeout=5.0)
            arrived = time.monotonic()
            received += 1
            stamp = sent_at.pop(frame.pts, None) if frame.pts is not None else None
            if stamp is not None and arrived >= measure_from:
                latencies_ms.append((arrived - stamp) * 1000.0)
        buffer = jitter_buffer_of(session.receiver)
    finally:
        await session.close()
    latencies_ms.sort()
    return LatencyReport(
        codec=codec,
        low_latency=low_latency,
        seconds=seconds,
        frames_sent=track.frames_sent,
        frames_received=received,
        frames_measured=len(latencies_ms),
        p50_ms=_or_nan(percentile(latencies_ms, 50)),
        p95_ms=_or_nan(percentile(latencies_ms, 95)),
        mean_ms=statistics.fmean(latencies_ms) if latencies_ms else float("nan"),
        max_ms=latencies_ms[-1] if latencies_ms else float("nan"),
        frames_on_marker=buffer.frames_on_marker if buffer else -1,
        frames_on_next_frame=buffer.frames_on_next_frame if buffer else -1,
        packets_dropped=buffer.packets_dropped if buffer else -1,
    )


def measure_loopback_latency(
    low_latency: bool,
    seconds: float,
    codec: str = "vp8",
    *,
    warmup: float = 1.0,
    fps: int = 30,
) -> LatencyReport:
    """Stream 640x480 test video over loopback for ``warmup + seconds`` and report latency.

    Runs its own event loop (call it from synchronous code) and restores aiortc's globals after.
    """
    with _restoring_aiortc_patches():
        if low_latency:
            install_low_latency_jitter_buffer()
        else:
            uninstall_low_latency_jitter_buffer()
        install_sender_zero_timestamp_origin()
        install_receiver_absolute_timestamps()
        return asyncio.run(_measure(low_latency, seconds, codec, warmup, fps))
