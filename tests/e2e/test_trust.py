"""Trust on a hostile network: signalling over HTTPS with the worker's certificate pinned (a
wrong pin is refused before any answer is used); rogue workers advertised over MQTT (outside
fleet.allowed_worker_urls, or unreachable) never keep an edge from the real one; a camera's
password never reaches logs, reports, the worker or MQTT; a long-lived MJPEG viewer can't hold
the worker's exit."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from mobieye.fleet import topics
from mobieye.fleet.payloads import WorkerState
from mobieye.mqtt.broker import MosquittoProcess
from mobieye.runtime import free_port
from mobieye.tls import file_fingerprint
from tests.e2e.conftest import stop
from tests.edge.cameras import MjpegCamera, need_ffmpeg

pytestmark = pytest.mark.slow

TOKEN = "trust-test-token-0123456789"


def start_worker(
    model: Path, cache: Path, *extra: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    log = cache / f"worker-{port}.log"
    argv = [sys.executable, "-m", "cloud_worker", "--port", str(port), "--model", str(model),
            "--imgsz", "320", *extra]  # fmt: skip
    full_env = {**os.environ, "MOBIEYE_CACHE_DIR": str(cache), "MOBIEYE_WORKER_TOKEN": TOKEN,
                **(env or {})}  # fmt: skip
    with log.open("wb") as f:
        proc = subprocess.Popen(argv, env=full_env, stdout=f, stderr=subprocess.STDOUT)
    tls = "MOBIEYE_WORKER__TLS" in full_env
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(url + "/healthz", timeout=1, verify=False).status_code == 200:
                return proc, url, log
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("worker never became healthy")


def run_edge(*args: str, env: dict[str, str], timeout: float = 90) -> tuple[int, str]:
    argv = [sys.executable, "-m", "mobieye.cli", "edge", *args]
    r = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True,
                       timeout=timeout)  # fmt: skip
    return r.returncode, r.stderr


def test_signalling_over_https_with_a_pinned_certificate(
    model_path: Path, pedestrian_clip: Path, tmp_path: Path
) -> None:
    proc, url, _ = start_worker(model_path, tmp_path, env={"MOBIEYE_WORKER__TLS": "self-signed"})
    try:
        pin = file_fingerprint(tmp_path / "tls" / "worker-cert.pem")
        report = tmp_path / "report.json"
        rc, err = run_edge("--source", str(pedestrian_clip), "--worker", url, "--duration", "8",
                           "--report", str(report),
                           env={"MOBIEYE_WORKER_TOKEN": TOKEN,
                                "MOBIEYE_FLEET__WORKER_FINGERPRINT": pin})  # fmt: skip
        assert rc == 0, err[-3000:]
        assert json.loads(report.read_text())["result_ratio"] > 0.8
        # Someone else's certificate on the path: refused, naming both fingerprints.
        wrong = "sha256:" + "ab" * 32
        rc, err = run_edge("--source", str(pedestrian_clip), "--worker", url, "--duration", "5",
                           env={"MOBIEYE_WORKER_TOKEN": TOKEN,
                                "MOBIEYE_FLEET__WORKER_FINGERPRINT": wrong})  # fmt: skip
        assert rc != 0
        assert pin in err and wrong in err, err[-2000:]
        # No pin and no CA: the self-signed certificate fails verification.
        rc, err = run_edge("--source", str(pedestrian_clip), "--worker", url, "--duration", "5",
                           env={"MOBIEYE_WORKER_TOKEN": TOKEN})  # fmt: skip
        assert rc != 0 and "CERTIFICATE_VERIFY_FAILED" in err, err[-2000:]
        # Without the token: 401, said plainly.
        rc, err = run_edge("--source", str(pedestrian_clip), "--worker", url, "--duration", "5",
                           env={"MOBIEYE_FLEET__WORKER_FINGERPRINT": pin})  # fmt: skip
        assert rc != 0 and "401" in err and "Bearer" in err, err[-2000:]
    finally:
        stop(proc)


async def advertise_rogues(broker_url: str) -> None:
    """Two rogue workers, retained, as any client of an open broker could publish them."""
    import aiomqtt

    host, port = broker_url.removeprefix("mqtt://").split(":")
    async with aiomqtt.Client(host, int(port), identifier="rogue") as client:
        for state in (
            WorkerState(id="rogue-far", status="online", url="http://10.66.0.1:8000",
                        capacity=99, load=0.0),
            WorkerState(id="rogue-dead", status="online", url=f"http://127.0.0.1:{free_port()}",
                        capacity=99, load=0.0),
        ):  # fmt: skip
            topic = topics.worker_state("mobieye", state.id)
            await client.publish(topic, state.model_dump_json(), qos=1, retain=True)


def test_rogue_workers_never_keep_an_edge_from_the_real_one(
    broker: MosquittoProcess, model_path: Path, pedestrian_clip: Path, tmp_path: Path
) -> None:
    need_ffmpeg()
    proc, _, worker_log = start_worker(model_path, tmp_path, "--broker", broker.url,
                                         "--id", "real")  # fmt: skip
    camera = MjpegCamera(pedestrian_clip)
    camera.start()
    try:
        asyncio.run(advertise_rogues(broker.url))
        secret_url = camera.url.replace("http://", "http://viewer:hunter2secret@")
        report = tmp_path / "report.json"
        trace = tmp_path / "trace.jsonl"
        rc, err = run_edge("--source", secret_url, "--worker", "auto", "--broker", broker.url,
                           "--duration", "12", "--report", str(report), "--trace", str(trace),
                           env={"MOBIEYE_WORKER_TOKEN": TOKEN})  # fmt: skip
        assert rc == 0, err[-3000:]
        summary = json.loads(report.read_text())
        assert summary["worker_id"] == "real"
        assert summary["result_ratio"] > 0.8, summary
        assert "rogue-far" in err and "fleet.allowed_worker_urls" in err  # ignored, and why
        # The camera's password went nowhere: not the edge's log, its report or trace, the
        # worker's log, nor the fleet's MQTT states.
        states = asyncio.run(retained_states(broker.url))
        for where, text in (("edge log", err), ("report", report.read_text()),
                            ("trace", trace.read_text()), ("worker log", worker_log.read_text()),
                            ("MQTT", states)):  # fmt: skip
            assert "hunter2secret" not in text, f"the camera's password is in the {where}"
        assert "viewer:***@" in summary["source"]
    finally:
        camera.kill()
        stop(proc)


async def retained_states(broker_url: str) -> str:
    import aiomqtt

    host, port = broker_url.removeprefix("mqtt://").split(":")
    seen: list[str] = []
    async with aiomqtt.Client(host, int(port), identifier="reader") as client:
        await client.subscribe("mobieye/#")
        try:
            async with asyncio.timeout(2):
                async for message in client.messages:
                    seen.append(f"{message.topic} {message.payload!r}")
        except TimeoutError:
            pass
    return "\n".join(seen)


def test_an_open_mjpeg_viewer_cannot_hold_the_workers_exit(
    model_path: Path, pedestrian_clip: Path, tmp_path: Path
) -> None:
    # The edge has a fixed URL, so it can't move: the drain's own wait is kept short here.
    proc, url, _ = start_worker(model_path, tmp_path,
                                env={"MOBIEYE_WORKER__SHUTDOWN_TIMEOUT_S": "2",
                                     "MOBIEYE_WORKER__DRAIN_TIMEOUT_S": "1"})  # fmt: skip
    edge = subprocess.Popen(
        [sys.executable, "-m", "mobieye.cli", "edge", "--source", str(pedestrian_clip), "--loop",
         "--worker", url, "--duration", "60", "--stream-id", "watched"],
        env={**os.environ, "MOBIEYE_WORKER_TOKEN": TOKEN}, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            active = httpx.get(url + "/streams", headers=auth).json()["active"]
            if active:
                break
            time.sleep(0.3)
        with httpx.stream("GET", url + "/streams/watched/mjpeg", headers=auth, timeout=10) as r:
            assert r.status_code == 200
            next(r.iter_bytes())  # a viewer is attached and reading
            proc.send_signal(signal.SIGTERM)
            t = time.monotonic()
            proc.wait(15)
            assert time.monotonic() - t < 10, "the MJPEG response held the worker's exit"
    finally:
        edge.kill()
        stop(proc)
