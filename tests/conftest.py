"""Shared fixtures: the real data in ../shared/data, and a loopback-only WebRTC set-up."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from mobieye.runtime import default_data_dir
from tests.realparts import TAG, install_command, need

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    need("data")
    return default_data_dir()


@pytest.fixture(scope="session")
def model_path(data_dir: Path) -> Path:
    """The cheapest detector: YOLOX-Nano in the reference set; in a set assembled by
    `make test-data ARGS=--download`, the first ONNX model it exported."""
    reference = data_dir / "models" / "yolox_nano_dynamic_ultralytics.onnx"
    if reference.is_file():
        return reference
    models = sorted((data_dir / "models").glob("*.onnx"))
    if not models:
        pytest.fail(f"no ONNX model in {data_dir / 'models'}")
    return models[0]


@pytest.fixture(scope="session")
def pedestrian_clip(data_dir: Path) -> Path:
    return data_dir / "videos" / "TUD-Stadtmitte.mp4"


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say which real parts were missing, how many tests that cost, and how to get them."""
    missing: Counter[str] = Counter()
    for report in terminalreporter.stats.get("skipped", []):
        text = str(report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr)
        if TAG in text:
            missing[text.split(TAG, 1)[1].split("]", 1)[0]] += 1
    if not missing:
        return
    write = terminalreporter.write_line
    terminalreporter.section("real parts missing", sep="=", yellow=True, bold=True)
    for name, count in missing.most_common():
        write(f"{count:4d} test(s) skipped: no {name}")
    write(f"to run them: {install_command(set(missing))}")
