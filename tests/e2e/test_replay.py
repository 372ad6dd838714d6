"""Replay load: edge agents sending a clip encoded once, several in one process, to a real
worker over loopback WebRTC. Each is measured as a captured stream is: results for its
frames, boxes on the people, latencies; and the worker decodes what they send."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from edge_agent.agent import EdgeAgent, EdgeOutputs
from edge_agent.encoded_clip import Codec, Encoding, load_or_encode
from edge_agent.replay import ReplaySource
from mobieye.config import load_settings

pytestmark = pytest.mark.slow
STREAMS, DURATION_S = 3, 8.0


@pytest.mark.asyncio
@pytest.mark.parametrize("codec", ["vp8", "h264"])
async def test_replayed_streams_are_detected_and_measured_like_captured_ones(
    worker_url: str, pedestrian_clip: Path, tmp_path: Path, codec: Codec
) -> None:
    clip = await asyncio.to_thread(load_or_encode, pedestrian_clip, Encoding(codec), tmp_path)
    agents = []
    for i in range(STREAMS):
        settings = load_settings(None, {"edge": {"worker_url": worker_url,
                                                 "stream_id": f"replay-{codec}-{i}"},
                                        "webrtc": {"codec": codec}})  # fmt: skip
        source = ReplaySource(clip, pedestrian_clip, fps=30, keep_timeline=True)
        agents.append(EdgeAgent(settings, source, EdgeOutputs(keep_timeline=True)))
    reports = await asyncio.gather(*(a.run(DURATION_S) for a in agents))
    for agent, report in zip(agents, reports, strict=True):
        sent = report["frames_sent"]
        assert sent >= 30 * DURATION_S * 0.8, report  # paced at 30 fps
        assert report["frames_with_result"] >= 0.9 * sent, report
        assert report["classes_seen"].get("person", 0) > sent / 2, report
        assert report["latency_ms"]["p50"] is not None, report
        assert report["out_of_order_results"] == 0, report
        # Scored by clip frame, like a captured file: the timeline names the clip's frames.
        indices = [f.index for f in agent.sent_frames]
        assert indices[:3] == [0, 1, 2] and max(indices) < len(clip), indices[:5]
        assert report["controller"]["last"]["level"] == 0  # a replay's level is fixed
    async with httpx.AsyncClient(trust_env=False) as client:
        streams = (await client.get(f"{worker_url}/streams")).json()
    done = {s["stream_id"]: s for s in streams["recent"]
            if s["stream_id"].startswith(f"replay-{codec}-")}  # fmt: skip
    assert len(done) == STREAMS, streams
    for summary in done.values():
        assert summary["frames_received"] >= 0.9 * 30 * DURATION_S * 0.8, summary
        assert summary["damaged_frames"] == 0, summary  # every packet decoded
