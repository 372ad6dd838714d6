"""export_model: as far as it can be checked offline."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from mobieye.config import DetectorConfig, LadderModel
from mobieye.detector import UltralyticsDetector
from mobieye.errors import ModelError
from mobieye.models.export import export_model
from mobieye.runtime import configure_ultralytics_env

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
HAS_ONNX = importlib.util.find_spec("onnx") is not None


def test_onnx_to_onnx_is_the_model_itself(model_path: Path, tmp_path: Path) -> None:
    rung = LadderModel(path=str(model_path), imgsz=320, accuracy=25.8)
    assert export_model(rung, "onnx", cache_dir=tmp_path) is rung
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(HAS_OPENVINO, reason="openvino is installed here")
def test_onnx_to_openvino_without_openvino_says_what_to_install(
    model_path: Path, tmp_path: Path
) -> None:
    rung = LadderModel(path=str(model_path), imgsz=320, accuracy=25.8)
    with pytest.raises(ModelError, match=r"pip install openvino"):
        export_model(rung, "openvino", cache_dir=tmp_path)


def test_unexportable_sources_are_refused(tmp_path: Path) -> None:
    script = tmp_path / "model.torchscript"
    script.write_bytes(b"x")
    with pytest.raises(ModelError, match=r"only \.pt .* or \.onnx sources"):
        export_model(LadderModel(path=str(script), accuracy=1), "onnx", cache_dir=tmp_path)


@pytest.mark.skipif(not HAS_ONNX, reason="ultralytics' ONNX export needs the onnx package")
def test_pt_to_onnx_exports_once_and_loads(tmp_path: Path) -> None:
    # A randomly initialised YOLOv8n built from ultralytics' bundled YAML: a real .pt, offline.
    configure_ultralytics_env()
    from ultralytics.models import YOLO

    models = tmp_path / "models"
    models.mkdir()
    pt = models / "tiny.pt"
    YOLO("yolov8n.yaml", task="detect").save(str(pt))
    rung = LadderModel(path=str(pt), imgsz=320, accuracy=3.0)

    exported = export_model(rung, "onnx", cache_dir=tmp_path / "exports")
    artefact = Path(exported.path)
    assert artefact.suffix == ".onnx" and artefact.parent == tmp_path / "exports"
    assert (exported.label, exported.imgsz, exported.accuracy) == ("tiny@320", 320, 3.0)
    assert sorted(p.name for p in models.iterdir()) == ["tiny.pt"]  # nothing beside the source
    assert [p.name for p in (tmp_path / "exports").iterdir()] == [artefact.name]

    mtime = artefact.stat().st_mtime_ns
    again = export_model(rung.model_copy(update={"imgsz": 416}), "onnx", tmp_path / "exports")
    assert Path(again.path) == artefact and artefact.stat().st_mtime_ns == mtime

    detector = UltralyticsDetector(DetectorConfig(model=str(artefact), imgsz=416))
    detector.load()  # dynamic export: any multiple of 32
    detector.detect([np.zeros((480, 640, 3), np.uint8)])
