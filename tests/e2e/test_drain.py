"""Graceful drain: a worker told to go (SIGTERM, or a drain command over MQTT) moves its streams
to another worker before it exits, with no frame left without boxes.

Real parts: a Mosquitto, worker processes serving the real model, edge agent processes streaming
a real clip over WebRTC on loopback."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from mobieye.config import MqttConfig
from mobieye.fleet import topics
from mobieye.mqtt.broker import MosquittoProcess
from mobieye.mqtt.client import MqttLink
from tests.e2e.conftest import stop
from tests.e2e.test_fleet import active_streams, start_edge, start_worker

pytestmark = pytest.mark.slow

MAX_GAP_MS = 500  # the bound on the longest gap in cloud results across a move


def wait_for_streams(url: str, n: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while active_streams(url) < n:
        assert time.monotonic() < deadline, f"{url} never served {n} streams"
        time.sleep(0.3)


def drained_log(proc: subprocess.Popen[bytes], log: Path) -> str:
    """The worker's output once it has exited by itself."""
    proc.wait(timeout=60)
    return log.read_text(errors="replace")


def check_moved(reports: list[Path]) -> None:
    for path in reports:
        r = json.loads(path.read_text())
        assert r["moves"] == 1, r
        assert r["failovers"] == 0, r["errors"]
        # No frame without boxes: each one shown had the cloud's in time or the tracker's.
        assert r["bare_frames_after_first_boxes"] == 0, r["boxes_from"]
        assert r["max_result_gap_ms"] <= MAX_GAP_MS, r["max_result_gap_ms"]
        assert r["frames_with_result"] / r["frames_captured"] >= 0.9, r
        assert r["worker_id"] == "w-next"


def test_sigterm_moves_three_streams_to_another_worker_without_a_gap(
    broker: MosquittoProcess, model_path: Path, pedestrian_clip: Path, tmp_path: Path
) -> None:
    old_log = tmp_path / "w-old.log"
    old, old_url = start_worker(model_path, broker.url, "w-old", log=old_log)
    time.sleep(1.0)
    reports = [tmp_path / f"edge{i}.json" for i in range(3)]
    edges = [start_edge(pedestrian_clip, broker.url, r, duration=32) for r in reports]
    new: subprocess.Popen[bytes] | None = None
    try:
        wait_for_streams(old_url, 3)  # all three on the only worker
        new, new_url = start_worker(model_path, broker.url, "w-next")
        time.sleep(2)  # its retained state reaches the edges
        old.send_signal(signal.SIGTERM)
        log = drained_log(old, old_log)
        assert old.returncode == 0, log[-3000:]
        assert "3 of 3 stream(s) left before the deadline" in log, log[-3000:]
        assert active_streams(new_url) == 3
        codes = [e.wait(timeout=90) for e in edges]
    finally:
        for proc in (old, new, *edges):
            if proc is not None:
                stop(proc)
    assert codes == [0, 0, 0]
    check_moved(reports)


@pytest.mark.asyncio
async def test_drain_over_mqtt_and_a_stream_that_cannot_move_is_named(
    broker: MosquittoProcess, model_path: Path, pedestrian_clip: Path, tmp_path: Path
) -> None:
    """A drain command moves the fleet edge; an edge on a fixed URL has nowhere to go, and the
    drain's deadline names its stream and the edge's reason."""
    old_log = tmp_path / "w-old.log"
    old, old_url = start_worker(model_path, broker.url, "w-old", log=old_log, drain_timeout_s=6)
    fleet_report, fixed_report = tmp_path / "fleet.json", tmp_path / "fixed.json"
    await asyncio.sleep(1.0)
    # Edge-first (stills on the data channel) for this one: the move is the same.
    fleet_edge = start_edge(pedestrian_clip, broker.url, fleet_report, 24, "auto",
                            "--uplink", "keyframes")  # fmt: skip
    fixed_edge = start_edge(pedestrian_clip, broker.url, fixed_report, duration=24,
                            worker=old_url)  # fmt: skip
    new: subprocess.Popen[bytes] | None = None
    try:
        await asyncio.to_thread(wait_for_streams, old_url, 2)
        new, _ = await asyncio.to_thread(start_worker, model_path, broker.url, "w-next")
        await asyncio.sleep(3)
        link = MqttLink(MqttConfig(broker=broker.url), "test-drain")
        await link.start()
        link.publish(topics.worker_set("mobieye", "w-old"), b'{"drain": true}')
        await asyncio.sleep(0.5)
        await link.stop()
        started = time.monotonic()
        log = await asyncio.to_thread(drained_log, old, old_log)
        took = time.monotonic() - started
        assert old.returncode == 0, log[-3000:]
        assert "drain command over MQTT" in log
        assert "1 of 2 stream(s) left before the deadline" in log, log[-3000:]
        assert "did not move within 6 s: its edge could not move: no other worker took the " \
            "stream: the edge was started with a fixed worker URL" in log, log[-3000:]  # fmt: skip
        assert took < 15, took  # the deadline, then the exit
        await asyncio.to_thread(fleet_edge.wait, 90)
        await asyncio.to_thread(fixed_edge.wait, 90)
    finally:
        for proc in (old, new, fleet_edge, fixed_edge):
            if proc is not None:
                stop(proc)
    r = json.loads(fleet_report.read_text())
    assert r["moves"] == 1 and r["failovers"] == 0, r["errors"]
    assert r["bare_frames_after_first_boxes"] == 0, r["boxes_from"]
    assert r["worker_id"] == "w-next" and r["uplink"] == "keyframes"
    assert r["stills"]["sent"] > 0
    fixed = json.loads(fixed_report.read_text())
    assert fixed["moves"] == 0 and fixed["failovers"] >= 1  # its worker went: it reconnects
