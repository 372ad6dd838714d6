"""Packet loss on the way to the worker: no stall, no detection on a damaged frame, recovery.

The lossy network is emulated at the worker's RTP input (outside the system under test): during
a window, a share of media packets and every retransmission are discarded, so some losses are
never repaired. The worker runs in-process so the test can read its per-stream counters.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtp import RtpPacket

from cloud_worker.app import create_app
from cloud_worker.main import build_detectors, prepare_receiver_webrtc
from edge_agent.agent import EdgeAgent, EdgeOutputs
from edge_agent.sources import VideoSource, parse_source
from mobieye.config import load_settings
from mobieye.runtime import free_port
from tests.e2e.conftest import serving

pytestmark = pytest.mark.slow


@pytest_asyncio.fixture
async def in_process_worker(model_path: Path) -> AsyncIterator[tuple[str, Any]]:
    port = free_port()
    settings = load_settings(None, {"detector": {"model": str(model_path)}})
    prepare_receiver_webrtc(settings)
    app = create_app(settings, build_detectors(settings), "w-loss")
    async with serving(app, port) as url:
        yield url, app.state.worker


@pytest.mark.asyncio
async def test_lossy_window_damages_frames_without_stalling_or_detecting_on_them(
    in_process_worker: tuple[str, Any], pedestrian_clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, state = in_process_worker
    stock = RTCRtpReceiver._handle_rtp_packet
    rng = random.Random(7)
    window: dict[str, float] = {}
    media_ssrc: dict[str, int] = {}
    dropped = [0]

    async def lossy(self: RTCRtpReceiver, packet: RtpPacket, arrival_time_ms: int) -> None:
        media_ssrc.setdefault("ssrc", packet.ssrc)
        now = time.monotonic()
        if window and window["start"] <= now < window["end"]:
            is_rtx = packet.ssrc != media_ssrc["ssrc"]
            if is_rtx or rng.random() < 0.04:
                dropped[0] += 1
                return
        await stock(self, packet, arrival_time_ms)

    monkeypatch.setattr(RTCRtpReceiver, "_handle_rtp_packet", lossy)
    settings = load_settings(None, {"edge": {"worker_url": url, "stream_id": "lossy"}})
    agent = EdgeAgent(
        settings, VideoSource(parse_source(str(pedestrian_clip)), loop_file=True), EdgeOutputs()
    )
    after_window: list[int] = []

    def on_result(result: Any) -> None:
        if not window and result.seq == 30:
            window.update(start=time.monotonic(), end=time.monotonic() + 2.0)
        elif window and time.monotonic() > window["end"] + 1.0:
            after_window.append(result.detector_runs)

    agent.on_result = on_result
    report = await agent.run(duration_s=7)

    for _ in range(100):  # the worker closes the stream once it sees the peer leave
        summary = next((s for s in state.recent if s["stream_id"] == "lossy"), None)
        if summary is not None:
            break
        await asyncio.sleep(0.1)
    assert summary is not None, "the worker never closed the stream"
    assert dropped[0] > 5
    assert summary["damaged_frames"] > 0, summary
    assert summary["keyframe_decisions"].get("damaged", 0) > 0, summary
    # No multi-second stall: most frames still got a result, and detection resumed afterwards.
    assert report["frames_with_result"] / report["frames_captured"] >= 0.7, report
    assert after_window and after_window[-1] > after_window[0], "detections resumed"
    assert report["latency_ms"]["p50"] < 100
