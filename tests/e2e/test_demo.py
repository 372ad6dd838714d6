"""The issue's own acceptance command, shortened: `mobieye demo ... --duration S --report R`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_demo_runs_a_clip_for_a_duration_and_writes_the_report(
    data_dir: Path, model_path: Path, tmp_path: Path
) -> None:
    clip = data_dir / "videos" / "TUD-Campus.mp4"  # 71 frames: the demo loops it
    report_path = tmp_path / "r.json"
    r = subprocess.run(
        [
            sys.executable, "-m", "mobieye.cli", "demo", "--source", str(clip),
            "--model", str(model_path), "--duration", "8", "--report", str(report_path),
        ],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert report["frames_captured"] > 150  # 8 s at 25 fps, looping a 2.8 s clip
    assert report["frames_with_result"] / report["frames_captured"] >= 0.95
    assert "person" in report["classes_seen"]
    assert report["detector_runs"] / report["frames_captured"] <= 0.5
    for key in ("p50", "p95", "p99"):
        assert report["latency_ms"][key] is not None
    assert report["uplink_kbps"] and report["uplink_kbps"] > 0
    assert report["model"] == f"{model_path.stem}@416"
    assert "fps" in r.stderr and "latency p50" in r.stderr  # the live status line


def test_demo_without_a_model_offline_says_what_to_pass(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "mobieye.cli", "demo", "--duration", "1"],
        capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "YOLO_OFFLINE": "1", "HOME": str(tmp_path)},
    )  # fmt: skip
    assert r.returncode == 2
    assert "--model" in r.stderr and "MOBIEYE_MODEL" in r.stderr


def test_demo_without_a_source_streams_the_packaged_sample_clip(
    model_path: Path, tmp_path: Path
) -> None:
    report_path = tmp_path / "r.json"
    r = subprocess.run(
        [
            sys.executable, "-m", "mobieye.cli", "demo", "--model", str(model_path),
            "--duration", "3", "--report", str(report_path),
        ],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert report["source"].endswith("bikes.mp4")
    assert report["frames_with_result"] > 0
