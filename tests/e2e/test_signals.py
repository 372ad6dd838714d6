"""Nothing lost at the edge: SIGTERM or SIGINT at any moment (connecting, streaming, failing
over) ends the edge within a few seconds with its report written, its trace flushed and its
recording playable; a demo stopped by a signal, or killed, leaves no process behind."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import psutil
import pytest

from tests.e2e.conftest import start_worker, stop

pytestmark = pytest.mark.slow

EXIT_WITHIN_S = 6.0


def edge(url: str, clip: Path, out: Path) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "mobieye.cli", "edge", "--source", str(clip), "--loop",
            "--worker", url, "--duration", "120", "--report", str(out / "report.json"),
            "--trace", str(out / "trace.jsonl"), "--record", str(out / "record.mp4")]  # fmt: skip
    with (out / "edge.log").open("w") as log:  # a pipe nobody reads would stall the edge
        return subprocess.Popen(argv, stderr=log, text=True)


def stop_and_check(proc: subprocess.Popen[str], sig: int, out: Path) -> dict[str, object]:
    """Signal the edge; it must exit soon with everything written and readable."""
    proc.send_signal(sig)
    t = time.monotonic()
    try:
        proc.wait(timeout=EXIT_WITHIN_S)
        stderr = (out / "edge.log").read_text()
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the edge did not exit within {EXIT_WITHIN_S} s of {signal.Signals(sig).name}")
    assert time.monotonic() - t < EXIT_WITHIN_S
    assert "Traceback" not in stderr, stderr[-3000:]
    assert (out / "report.json").is_file(), stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert any("interrupted" in e for e in report["errors"]), report["errors"]
    trace = out / "trace.jsonl"
    for line in trace.read_text().splitlines() if trace.exists() else []:
        json.loads(line)  # every line whole
    if report["frames_with_result"]:
        cap = cv2.VideoCapture(str(out / "record.mp4"))
        ok, frame = cap.read()
        frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        cap.release()
        assert ok and frame is not None and frames > 0, "the recording is not playable"
    assert not list(out.glob("*.tmp")), "a half-written report was left"
    return report


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_edge_stopped_at_a_random_moment_writes_everything(
    worker_url: str, pedestrian_clip: Path, tmp_path: Path, seed: int
) -> None:
    delay = random.Random(seed).uniform(0.3, 6.0)  # from connecting to well into streaming
    proc = edge(worker_url, pedestrian_clip, tmp_path)
    time.sleep(delay)
    sig = (signal.SIGTERM, signal.SIGINT)[seed % 2]
    report = stop_and_check(proc, sig, tmp_path)
    if delay > 4:
        assert report["frames_with_result"] > 0


def test_edge_stopped_while_failing_over_writes_everything(
    model_path: Path, pedestrian_clip: Path, tmp_path: Path
) -> None:
    worker, url = start_worker(model_path)
    proc = edge(url, pedestrian_clip, tmp_path)
    try:
        deadline = time.monotonic() + 60
        trace = tmp_path / "trace.jsonl"
        while time.monotonic() < deadline and not (trace.exists() and trace.stat().st_size):
            time.sleep(0.2)  # results are arriving
        time.sleep(1)
        worker.kill()  # the edge now retries its (only) worker
        worker.wait()
        time.sleep(4)
        report = stop_and_check(proc, signal.SIGTERM, tmp_path)
    finally:
        stop(worker)
        if proc.poll() is None:
            proc.kill()
    assert report["frames_with_result"] > 0
    assert any("lost" in e for e in report["errors"]), report["errors"]


def _descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_demo_stopped_leaves_no_process(
    model_path: Path, pedestrian_clip: Path, tmp_path: Path, how: str
) -> None:
    argv = [sys.executable, "-m", "mobieye.cli", "demo", "--model", str(model_path),
            "--source", str(pedestrian_clip), "--duration", "120",
            "--report", str(tmp_path / "report.json")]  # fmt: skip
    log = tmp_path / "demo.log"
    with log.open("w") as f:
        proc = subprocess.Popen(argv, stderr=f, text=True)
    children: list[psutil.Process] = []
    deadline = time.monotonic() + 120
    while "worker ready" not in log.read_text() and time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        children = _descendants(proc.pid) or children
        time.sleep(0.2)
    children = _descendants(proc.pid) or children
    assert children, "the demo started no worker process"
    time.sleep(3)
    proc.send_signal(getattr(signal, how))
    proc.wait(EXIT_WITHIN_S + 10)
    _, alive = psutil.wait_procs(children, timeout=EXIT_WITHIN_S + 10)
    for p in alive:
        p.kill()
    assert not alive, f"left running after {how}: {[p.cmdline() for p in alive]}"
    if how == "SIGTERM":
        report = json.loads((tmp_path / "report.json").read_text())
        assert report["frames_with_result"] > 0
        assert os.path.getsize(tmp_path / "report.json") > 0
