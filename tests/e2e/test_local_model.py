"""The edge's on-device model with a real model on a real clip: boxes before any worker
answers, from the cloud while one does, and again from the device when it dies."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import httpx
import pytest

from edge_agent.agent import EdgeAgent, EdgeOutputs
from edge_agent.sources import VideoSource, parse_source
from mobieye.config import load_settings
from mobieye.runtime import free_port

pytestmark = pytest.mark.slow


def agent_for(url: str, clip: Path, **edge: object) -> EdgeAgent:
    settings = load_settings(None, {"edge": {"worker_url": url, "source": str(clip), "loop": True,
                                             "result_timeout_s": 1.0, **edge}})  # fmt: skip
    source = VideoSource(parse_source(str(clip)), fps=settings.edge.fps, loop_file=True)
    return EdgeAgent(settings, source, EdgeOutputs(keep_timeline=True))


async def wait_healthy(url: str, proc: asyncio.subprocess.Process) -> None:
    async with httpx.AsyncClient(trust_env=False, timeout=1) as client:
        for _ in range(600):
            assert proc.returncode is None, "the worker exited"
            try:
                if (await client.get(url + "/healthz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("the worker never became healthy")


@pytest.mark.asyncio
async def test_boxes_come_from_the_device_until_a_worker_answers_and_after_it_dies(
    model_path: Path, pedestrian_clip: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    agent = agent_for(url, pedestrian_clip, local_model=f"{model_path}@320")
    worker: asyncio.subprocess.Process | None = None
    served_s: list[float] = []
    enough = asyncio.Event()
    agent.on_result = lambda _: agent.stats.frames_with_result >= 60 and enough.set()

    async def worker_comes_and_goes() -> None:
        nonlocal worker
        await asyncio.sleep(3)  # nobody answers at start-up
        worker = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cloud_worker", "--port", str(port), "--model",
            str(model_path), "--imgsz", "320",
            env={**os.environ, "MOBIEYE_LOG_LEVEL": "WARNING"},
        )  # fmt: skip
        await wait_healthy(url, worker)
        await asyncio.wait_for(enough.wait(), 30)  # the cloud answers for a while
        served_s.append(time.monotonic())
        worker.kill()  # an outage: no goodbye
        await worker.wait()

    try:
        report, _ = await asyncio.gather(agent.run(duration_s=25), worker_comes_and_goes())
    finally:
        if worker is not None and worker.returncode is None:
            worker.kill()
            await worker.wait()
    came = report["boxes_from"]
    assert report["local_model"]["ready"] and report["local_model"]["detections"] >= 10, report
    assert came["cloud"] >= 50, came  # the worker served while it was there
    assert came["local"] >= 50, came  # before it came and after it went
    # Nothing shown without boxes once the device has detected once (a few frames at start).
    assert came["none"] <= 10, came
    assert served_s and agent.local_results, "no on-device result after the worker died"
    after = [r for r in agent.local_results if r.arrival_s > served_s[0]]
    assert len(after) >= 5, "the on-device model did not take over after the worker died"
    assert any(len(r.boxes) for r in after), "the on-device model saw nobody on a street clip"
    assert report["edge_cpu_ms_per_frame"] > 0


@pytest.mark.asyncio
async def test_a_local_model_that_cannot_load_leaves_the_cloud_and_the_tracker(
    worker_url: str, pedestrian_clip: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    agent = agent_for(worker_url, pedestrian_clip, local_model=str(broken))
    report = await agent.run(duration_s=4)
    assert any("local model" in e or "on-device" in e for e in report["errors"]), report["errors"]
    assert report["local_model"]["ready"] is False
    assert report["frames_with_result"] / report["frames_captured"] >= 0.9
