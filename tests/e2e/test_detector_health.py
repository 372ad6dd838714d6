"""A worker whose detector fails says so: /healthz 503 with the reason, its MQTT state names the
problem (so edges stop choosing it), its metrics count it, and its streams' box age shows it.

Real parts: the real model on the real clip, a real edge agent over loopback WebRTC, a real
Mosquitto. The detector is made to fail by wrapping the real one (through the Detector
protocol), since nothing outside the system can break it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest
import pytest_asyncio

from cloud_worker.app import create_app
from cloud_worker.context import WorkerContext
from cloud_worker.main import build_detectors, prepare_receiver_webrtc
from edge_agent.agent import EdgeAgent, EdgeOutputs
from edge_agent.sources import VideoSource, parse_source
from mobieye.config import load_settings
from mobieye.detections import Detections
from mobieye.detector import Detector, Image
from mobieye.mqtt.broker import MosquittoProcess
from mobieye.runtime import free_port
from tests.e2e.conftest import serving
from tests.realparts import need

pytestmark = pytest.mark.slow


class Killed(BaseException):
    """Escapes every `except Exception`: the inference thread dies of it."""


class Breakable:
    """The real detector, until told to fail (``raise``) or to kill its thread once."""

    def __init__(self, inner: Detector) -> None:
        self.inner = inner
        self.name = inner.name
        self.mode = "ok"

    @property
    def names(self) -> dict[int, str]:
        return self.inner.names

    def load(self) -> None:
        self.inner.load()

    def detect(self, images: list[Image]) -> list[Detections]:
        if self.mode == "raise":
            raise RuntimeError("GPU fell off the bus (simulated)")
        if self.mode == "kill":
            self.mode = "ok"
            raise Killed("simulated thread death")
        return self.inner.detect(images)


@pytest_asyncio.fixture
async def broker() -> AsyncIterator[MosquittoProcess]:
    need("mosquitto")
    async with MosquittoProcess() as mosquitto:
        yield mosquitto


@pytest_asyncio.fixture
async def worker(
    model_path: Path, broker: MosquittoProcess
) -> AsyncIterator[tuple[str, WorkerContext, Breakable]]:
    port = free_port()
    settings = load_settings(None, {
        "detector": {"model": str(model_path), "imgsz": 320},
        "worker": {"id": "w-health", "port": port, "detector_stall_s": 1.5},
        "mqtt": {"broker": broker.url, "stats_period_s": 0.5},
    })  # fmt: skip
    prepare_receiver_webrtc(settings)
    ((label, (inner, accuracy)),) = build_detectors(settings).items()
    breakable = Breakable(inner)
    app = create_app(settings, {label: (breakable, accuracy)}, "w-health")
    async with serving(app, port) as url:
        yield url, app.state.worker, breakable


async def _watch(broker: MosquittoProcess, seen: list[tuple[str, dict[str, Any]]]) -> None:
    async with aiomqtt.Client("127.0.0.1", broker.port) as client:
        await client.subscribe("mobieye/workers/+/state")
        await client.subscribe("mobieye/streams/+/stats")
        async for message in client.messages:
            if message.payload:
                seen.append((str(message.topic), json.loads(bytes(message.payload))))  # type: ignore[arg-type]


async def _until(predicate: Any, timeout_s: float, what: str) -> None:
    for _ in range(int(timeout_s / 0.1)):
        if predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s: {what}")


@pytest.mark.asyncio
async def test_failing_detector_turns_health_503_and_says_why(
    worker: tuple[str, WorkerContext, Breakable], broker: MosquittoProcess, pedestrian_clip: Path
) -> None:
    url, state, detector = worker
    seen: list[tuple[str, dict[str, Any]]] = []
    watcher = asyncio.create_task(_watch(broker, seen))
    settings = load_settings(None, {"edge": {"worker_url": url, "stream_id": "cam"},
                                    "controller": {"enabled": False}})  # fmt: skip
    agent = EdgeAgent(settings, VideoSource(parse_source(str(pedestrian_clip)), loop_file=True),
                      EdgeOutputs())  # fmt: skip
    run = asyncio.create_task(agent.run(duration_s=14))
    client = httpx.AsyncClient(trust_env=False)

    def health() -> Any:
        return client.get(url + "/healthz")

    def states() -> list[dict[str, Any]]:
        return [p for t, p in seen if t.endswith("/state") and "w-health" in t]

    def stats() -> list[dict[str, Any]]:
        return [p for t, p in seen if t.endswith("/stats")]

    try:
        await _until(lambda: len(stats()) >= 3, 20, "stream stats")
        assert (await health()).status_code == 200
        assert states()[-1]["problem"] is None
        assert stats()[-1]["box_age_frames"]["max"] <= 15, stats()[-1]

        # 1. The thread dies once: logged, restarted, counted; the worker stays healthy.
        detector.mode = "kill"
        await _until(lambda: state.pool is not None and state.pool.restarts == 1, 10, "restart")
        await asyncio.sleep(1.0)
        assert (await health()).status_code == 200
        metrics = (await client.get(url + "/metrics")).text
        assert "mobieye_detector_restarts_total 1.0" in metrics

        # 2. Every detection fails: 503 with the reason, MQTT says why, boxes grow old.
        detector.mode = "raise"
        checked: list[httpx.Response] = []

        async def failing() -> bool:
            checked.append(await health())
            return checked[-1].status_code == 503

        for _ in range(100):
            if await failing():
                break
            await asyncio.sleep(0.1)
        body = checked[-1].json()
        assert checked[-1].status_code == 503, body
        assert body["status"] == "failing" and "simulated" in body["error"], body
        await _until(lambda: states() and states()[-1]["problem"], 5, "MQTT problem")
        assert "failed" in states()[-1]["problem"]
        await asyncio.sleep(1.5)
        ages = [s["box_age_frames"]["max"] for s in stats()[-2:] if s["box_age_frames"]]
        assert ages and max(ages) > 30, stats()[-2:]
        metrics = (await client.get(url + "/metrics")).text
        assert "mobieye_detector_up 0.0" in metrics
        failures = [ln for ln in metrics.splitlines()
                    if ln.startswith("mobieye_detector_failures_total")]  # fmt: skip
        assert failures and float(failures[0].split()[-1]) >= 3
        # a new stream is refused with the reason instead of being served stale boxes
        refused = await client.post(url + "/offer", json={"sdp": "v=0\r\nm=video 9 x\r\n",
                                                           "type": "offer"})  # fmt: skip
        assert refused.status_code == 503 and "cannot detect" in refused.json()["error"]

        # 3. Mended: healthy again, fresh boxes again.
        detector.mode = "ok"
        for _ in range(100):
            if (await health()).status_code == 200:
                break
            await asyncio.sleep(0.1)
        assert (await health()).status_code == 200
        await _until(lambda: states() and states()[-1]["problem"] is None, 5, "MQTT recovery")
        await asyncio.sleep(1.5)
        assert stats()[-1]["box_age_frames"]["p50"] <= 15, stats()[-1]
    finally:
        report = await run
        watcher.cancel()
        await client.aclose()
    assert report["frames_with_boxes"] > 0
    assert report["box_age_frames"]["max"] > 30  # the edge saw the stale stretch too
