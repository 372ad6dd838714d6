"""The fleet: workers announce themselves over a real Mosquitto, agents pick one and fail over.

Scaled to this 2-core machine: the issue's 40 s run with a kill at 15 s becomes 20 s and 7 s.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mobieye.mqtt.broker import MosquittoProcess
from tests.e2e.conftest import free_port, stop

pytestmark = pytest.mark.slow


@pytest.fixture
def broker() -> Iterator[MosquittoProcess]:
    mosquitto = MosquittoProcess()
    mosquitto.start()
    yield mosquitto
    mosquitto.stop()


def start_worker(
    model: Path, broker_url: str, worker_id: str
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloud_worker", "--id", worker_id, "--port", str(port),
         "--broker", broker_url, "--model", str(model), "--imgsz", "320", "--max-streams", "3"],
        env={**os.environ, "MOBIEYE_MQTT__KEEPALIVE_S": "2"},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"worker {worker_id} exited"
        try:
            if httpx.get(url + "/healthz", timeout=1, trust_env=False).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"worker {worker_id} never became healthy")


def start_edge(
    clip: Path, broker_url: str, report: Path, duration: float
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "--worker", "auto", "--broker", broker_url,
         "--source", str(clip), "--loop", "--duration", str(duration), "--report", str(report),
         "--log-level", "WARNING"],
    )  # fmt: skip


def active_streams(url: str) -> int:
    try:
        return len(httpx.get(url + "/streams", timeout=2, trust_env=False).json()["active"])
    except httpx.HTTPError:
        return 0


def test_killed_worker_streams_fail_over_within_seconds(
    broker: MosquittoProcess, model_path: Path, pedestrian_clip: Path, tmp_path: Path
) -> None:
    workers = {wid: start_worker(model_path, broker.url, wid) for wid in ("w-a", "w-b")}
    time.sleep(1.5)  # retained states published
    reports = [tmp_path / f"edge{i}.json" for i in range(3)]
    edges = [start_edge(pedestrian_clip, broker.url, r, duration=20) for r in reports]
    try:
        time.sleep(7)
        victim = max(workers, key=lambda w: active_streams(workers[w][1]))
        assert active_streams(workers[victim][1]) >= 1
        workers[victim][0].send_signal(signal.SIGKILL)
        codes = [e.wait(timeout=90) for e in edges]
    finally:
        for proc, _ in workers.values():
            stop(proc)
        for e in edges:
            stop(e)
    assert codes == [0, 0, 0]
    results = [json.loads(r.read_text()) for r in reports]
    moved = [r for r in results if r["failovers"] >= 1]
    assert moved, "some agents streamed to the killed worker"
    for r in moved:
        assert r["max_result_gap_ms"] <= 3000, r["max_result_gap_ms"]
    for r in results:
        assert r["frames_with_result"] / r["frames_captured"] >= 0.9, r
        assert r["classes_seen"].get("person", 0) > 0


def test_broker_restart_mid_run_loses_no_stream(
    broker: MosquittoProcess, model_path: Path, pedestrian_clip: Path, tmp_path: Path
) -> None:
    proc, _ = start_worker(model_path, broker.url, "w-solo")
    time.sleep(1.5)
    report = tmp_path / "edge.json"
    edge = start_edge(pedestrian_clip, broker.url, report, duration=10)
    try:
        time.sleep(4)
        broker.restart()
        assert edge.wait(timeout=60) == 0
        assert proc.poll() is None, "the worker survived the broker restart"
    finally:
        stop(proc)
        stop(edge)
    r = json.loads(report.read_text())
    assert r["failovers"] == 0
    assert r["frames_with_result"] / r["frames_captured"] >= 0.9
