"""A real edge agent and a real worker process over loopback WebRTC, a real model, real clips."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import cv2
import httpx
import pytest

from edge_agent.agent import EdgeAgent, EdgeOutputs
from edge_agent.sources import VideoSource, parse_source
from mobieye.config import load_settings
from mobieye.messages import Result

pytestmark = pytest.mark.slow


def make_agent(url: str, clip: Path, outputs: EdgeOutputs, **edge: object) -> EdgeAgent:
    settings = load_settings(None, {"edge": {"worker_url": url, "source": str(clip), **edge}})
    source = VideoSource(
        parse_source(str(clip)), fps=settings.edge.fps, loop_file=settings.edge.loop
    )
    return EdgeAgent(settings, source, outputs)


@pytest.mark.asyncio
async def test_clip_streams_and_every_frame_gets_boxes(
    worker_url: str, pedestrian_clip: Path, tmp_path: Path
) -> None:
    outputs = EdgeOutputs(
        trace=tmp_path / "trace.jsonl", report=tmp_path / "report.json", record=tmp_path / "out.mp4"
    )
    agent = make_agent(worker_url, pedestrian_clip, outputs, stream_id="tud")
    results: list[Result] = []
    agent.on_result = results.append
    report = await agent.run(duration_s=None)  # the whole clip (179 frames at 25 fps)

    assert report["frames_captured"] >= 170
    assert report["frames_with_result"] / report["frames_captured"] >= 0.95
    assert report["classes_seen"].get("person", 0) > 100
    assert report["detector_runs"] >= 5
    assert report["detector_runs"] / report["frames_captured"] <= 0.5
    assert report["out_of_order_results"] == 0
    assert report["latency_ms"]["p50"] is not None and report["latency_ms"]["p50"] > 0
    assert report["stream_id"] == "tud"
    # The worker tells the controller how many frames it skipped (none, on an idle worker).
    last = report["controller"]["last"]
    assert last is not None and last["worker_drop_ratio"] is not None, last
    assert 0 <= last["worker_drop_ratio"] < 0.5

    seqs = [r.seq for r in results]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), "results must arrive in order"
    sources = {r.source for r in results}
    assert {"detect", "track"} <= sources, sources
    # Track ids persist across keyframes: most ids live for many frames.
    ids = [b.track_id for r in results for b in r.boxes]
    assert len(set(ids)) < len(ids) / 10

    saved = json.loads(outputs.report.read_text())  # type: ignore[union-attr]
    assert saved["frames_with_result"] == report["frames_with_result"]
    lines = outputs.trace.read_text().splitlines()  # type: ignore[union-attr]
    assert len(lines) == report["frames_with_result"]
    assert json.loads(lines[-1])["latency_ms"] > 0
    video = cv2.VideoCapture(str(outputs.record))
    assert video.isOpened() and int(video.get(cv2.CAP_PROP_FRAME_COUNT)) > 100
    video.release()


@pytest.mark.asyncio
async def test_garbage_on_the_data_channel_is_dropped_and_the_stream_goes_on(
    worker_url: str, pedestrian_clip: Path
) -> None:
    agent = make_agent(worker_url, pedestrian_clip, EdgeOutputs())
    after_garbage: list[Result] = []
    sent = asyncio.Event()

    def on_result(result: Result) -> None:
        if not sent.is_set() and agent.channel is not None and result.seq > 10:
            agent.channel.send("{not json")
            agent.channel.send(b"\x00\xff binary junk")
            agent.channel.send('{"type": "hello", "stream_id": "bad id with spaces"}')
            sent.set()
        elif sent.is_set():
            after_garbage.append(result)

    agent.on_result = on_result
    report = await agent.run(duration_s=4)
    assert sent.is_set()
    assert len(after_garbage) > 30, "results kept coming after the garbage"
    assert len(report["errors"]) == 3
    assert any("stream_id" in e for e in report["errors"])


@pytest.mark.asyncio
async def test_worker_keeps_serving_when_one_stream_dies(
    worker_url: str, pedestrian_clip: Path
) -> None:
    """Kill one edge agent's process mid-stream; a second stream on the same worker goes on."""
    import sys

    survivor = make_agent(worker_url, pedestrian_clip, EdgeOutputs())
    victim = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge_agent", "--source", str(pedestrian_clip),
        "--worker", worker_url, "--stream-id", "victim",
    )  # fmt: skip

    async def kill_later() -> None:
        await asyncio.sleep(2.5)
        victim.kill()
        await victim.wait()

    report, _ = await asyncio.gather(survivor.run(duration_s=6), kill_later())
    assert victim.returncode is not None and victim.returncode < 0
    assert report["frames_with_result"] / report["frames_captured"] >= 0.9
    async with httpx.AsyncClient(trust_env=False) as client:
        health = (await client.get(worker_url + "/healthz")).json()
        metrics = (await client.get(worker_url + "/metrics")).text
    assert health["status"] == "ok"
    cap = health["capacity"]  # measured on the frames these streams cost
    assert cap["basis"] == "measured" and cap["cpu_ms_per_frame"] > 0, cap
    assert health["max_streams"] == cap["streams"] >= 1 and cap["admits_by"] == "measured"
    assert "mobieye_capacity_streams" in metrics and "mobieye_keyframe_stretch" in metrics
    assert "mobieye_detector_inference_seconds_count" in metrics
    assert "mobieye_frame_latency_seconds" in metrics


@pytest.mark.asyncio
async def test_h264_stream_matches_results_to_frames(
    worker_url: str, pedestrian_clip: Path
) -> None:
    settings = load_settings(
        None, {"edge": {"worker_url": worker_url}, "webrtc": {"codec": "h264"}}
    )
    source = VideoSource(parse_source(str(pedestrian_clip)))
    agent = EdgeAgent(settings, source, EdgeOutputs())
    report = await agent.run(duration_s=3)
    assert report["frames_with_result"] / report["frames_captured"] >= 0.9
    assert report["out_of_order_results"] == 0
    assert report["classes_seen"].get("person", 0) > 0
