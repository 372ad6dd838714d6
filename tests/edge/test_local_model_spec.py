"""edge.local_model names one model: anything else is refused with a message naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.local_model import local_detector
from mobieye.errors import MobiEyeError


def test_a_local_model_spec_names_one_existing_model(model_path: Path, tmp_path: Path) -> None:
    assert local_detector(f"{model_path}@320", 1).cfg.imgsz == 320
    with pytest.raises(MobiEyeError, match="one model"):
        local_detector(f"{model_path}@320,{model_path}@416", 1)
    with pytest.raises(MobiEyeError, match="does not exist"):
        local_detector(str(tmp_path / "missing.onnx"), 1)
