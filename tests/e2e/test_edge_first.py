"""Edge-first offload end to end: a real edge agent with ``edge.uplink: keyframes`` and a real
on-device model, a real worker with a real model, real WebRTC over loopback, a real clip."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from edge_agent.agent import EdgeAgent, EdgeOutputs
from edge_agent.sources import VideoSource, parse_source
from mobieye.config import load_settings
from mobieye.runtime import free_port

pytestmark = pytest.mark.slow


def agent_for(url: str, clip: Path, model: Path | None, **over: object) -> EdgeAgent:
    edge: dict[str, object] = {"worker_url": url, "source": str(clip), "loop": True,
                               "uplink": "keyframes", **over}  # fmt: skip
    if model is not None:
        edge["local_model"] = f"{model}@320"
    controller = {"uplink_kbps": edge.pop("uplink_kbps", None)}
    settings = load_settings(None, {"edge": edge, "controller": controller})
    source = VideoSource(parse_source(str(clip)), fps=settings.edge.fps, loop_file=True)
    return EdgeAgent(settings, source, EdgeOutputs(keep_timeline=True))


@pytest.mark.asyncio
async def test_edge_first_sends_few_stills_and_every_frame_shows_boxes(
    worker_url: str, model_path: Path, data_dir: Path
) -> None:
    clip = data_dir / "videos" / "TUD-Campus.mp4"  # not the clip the defaults were tuned on
    agent = agent_for(worker_url, clip, model_path, uplink_kbps=100)
    report = await agent.run(duration_s=12)
    st, came = report["stills"], report["boxes_from"]
    shown = sum(came.values())
    assert report["uplink"] == "keyframes" and report["errors"] == [], report["errors"]
    # The cloud answered stills, within the budget, and their boxes reached the frames.
    assert st["sent"] >= 5 and report["frames_with_result"] >= st["sent"] - 2, st
    assert report["uplink_kbps"] <= 100 * 1.5, report["uplink_kbps"]  # bucket depth at start
    assert came["tracker"] >= shown // 2, came
    assert st["frames_shown_with_boxes"] >= 0.95 * shown, (st, came)
    assert report["detector_runs"] >= 5 and report["model"]
    # What was shown has track ids (one id space for cloud and device boxes).
    ids = {int(i) for r in agent.results for i in r.boxes.tracker_id}
    assert ids and -1 not in ids


@pytest.mark.asyncio
async def test_an_older_worker_that_refuses_stills_leaves_the_device_serving_boxes(
    model_path: Path, pedestrian_clip: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker from before edge-first refuses a data-channel-only offer with its SDP check's
    words (answered here as it answers, by a stand-in: that code is gone from this tree); the
    edge says so, retries, and its device model keeps every frame boxed meanwhile."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    from tests.e2e.conftest import serving

    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/offer")
    async def offer() -> JSONResponse:
        return JSONResponse({"error": "bad offer: SDP offers no video (no 'm=video' line)"}, 400)

    port = free_port()
    async with serving(app, port) as url:
        agent = agent_for(url, pedestrian_clip, model_path)
        with caplog.at_level(logging.WARNING):
            report = await agent.run(duration_s=6)
    assert any("no video" in r.getMessage() for r in caplog.records), "refusal not logged"
    came = report["boxes_from"]
    assert report["stills"]["sent"] == 0
    assert came["local"] >= 0.8 * sum(came.values()), came
    assert report["stills"]["frames_shown_with_boxes"] > 0


@pytest.mark.asyncio
async def test_a_budget_too_small_for_any_still_is_said_and_boxes_go_on(
    worker_url: str, model_path: Path, pedestrian_clip: Path
) -> None:
    agent = agent_for(worker_url, pedestrian_clip, model_path, uplink_kbps=0.5)
    report = await asyncio.wait_for(agent.run(duration_s=10), 60)
    assert any("no keyframe fits" in e for e in report["errors"]), report["errors"]
    assert report["stills"]["sent"] <= 2  # the first goes (the bucket starts full)
    came = report["boxes_from"]
    assert came["none"] <= 0.1 * sum(came.values()), came
