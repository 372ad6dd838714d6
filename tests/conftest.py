"""Shared fixtures: the real data in ../shared/data, and a loopback-only WebRTC set-up."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mobieye.runtime import default_data_dir

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = default_data_dir()
    if not (path / "models").is_dir():
        pytest.skip(f"real test data not found at {path} (set MOBIEYE_DATA_DIR)")
    return path


@pytest.fixture(scope="session")
def model_path(data_dir: Path) -> Path:
    return data_dir / "models" / "yolox_nano_dynamic_ultralytics.onnx"


@pytest.fixture(scope="session")
def pedestrian_clip(data_dir: Path) -> Path:
    return data_dir / "videos" / "TUD-Stadtmitte.mp4"


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
