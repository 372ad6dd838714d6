"""The detector's runtimes: OpenVINO variants built into the cache and served, the fallback when
one can't be had, and the worker serving the runtime `mobieye models profile` chose."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from cloud_worker.detector_pool import DetectorPool
from cloud_worker.main import build_detectors
from mobieye import runtime as mruntime
from mobieye.config import DetectorConfig, LadderModel, Settings
from mobieye.detector import UltralyticsDetector
from mobieye.errors import ModelError
from mobieye.models import runtimes
from mobieye.models.profile import ModelProfile, ProfileCache, agreement, load_frames
from mobieye.models.runtimes import build_variant, parse_runtimes


@pytest.fixture()
def yolox(data_dir: Path) -> Path:
    return data_dir / "models" / "yolox_nano_dynamic_ultralytics.onnx"


@pytest.fixture()
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(mruntime, "CACHE_DIR", tmp_path / "cache")
    return tmp_path / "cache"


def test_runtime_names_are_checked() -> None:
    assert parse_runtimes("all") == list(runtimes.RUNTIMES)
    assert parse_runtimes(" onnxruntime, openvino-int8 ") == ["onnxruntime", "openvino-int8"]
    with pytest.raises(ModelError, match="unknown runtime 'tensorrt'"):
        parse_runtimes("onnxruntime,tensorrt")
    with pytest.raises(ModelError, match="no runtime named"):
        parse_runtimes(" , ")


def test_only_onnx_models_convert(tmp_path: Path, cache_dir: Path) -> None:
    pt = tmp_path / "m.pt"
    pt.write_bytes(b"weights")
    with pytest.raises(ModelError, match=r"needs an ONNX model to convert, not m\.pt"):
        build_variant(pt, "openvino-bf16", 320)
    assert build_variant(pt, "onnxruntime", 320) == pt  # native: the file itself


def test_bf16_variant_is_built_once_and_keeps_fp32_boxes(
    yolox: Path, cache_dir: Path, pedestrian_clip: Path
) -> None:
    frames = load_frames(pedestrian_clip, count=12)
    fp32 = UltralyticsDetector(DetectorConfig(model=str(yolox), imgsz=320))
    fp32.load()
    assert fp32.runtime == "onnxruntime"
    reference = [fp32.detect([f])[0] for f in frames]

    bf16 = UltralyticsDetector(DetectorConfig(model=str(yolox), imgsz=320, runtime="openvino-bf16"))
    bf16.load()
    assert bf16.runtime == "openvino-bf16"
    assert bf16.names == fp32.names  # class names come across from the ONNX metadata
    assert agreement([bf16.detect([f])[0] for f in frames], reference) >= 0.95
    (variant,) = (cache_dir / "exports").iterdir()  # export_model's IR, shared with --export
    assert variant.name.endswith("_openvino_model")
    (weights,) = variant.glob("*.bin")
    built = weights.stat().st_mtime_ns

    again = UltralyticsDetector(
        DetectorConfig(model=str(yolox), imgsz=320, runtime="openvino-fp32")
    )
    again.load()  # fp32 and bf16 share the IR: nothing is converted again
    assert weights.stat().st_mtime_ns == built
    assert agreement([again.detect([f])[0] for f in frames], reference) >= 0.99


def test_openvino_compiles_each_batch_shape_once(
    yolox: Path, cache_dir: Path, pedestrian_clip: Path
) -> None:
    # The worker batches 1..max_batch keyframes: alternating sizes must not recompile per call
    # (ultralytics' backend did, and compiling cost more CPU than inference under 8 streams).
    frames = load_frames(pedestrian_clip, count=3)
    det = UltralyticsDetector(DetectorConfig(model=str(yolox), imgsz=320, runtime="openvino-fp32"))
    det.load()
    assert det.openvino is not None
    singles = [det.detect([f])[0] for f in frames]
    after_warm_up = det.openvino.compiles
    for size in (3, 1, 2, 3, 1, 2):
        batch = det.detect(frames[:size])
        assert agreement(batch, singles[:size]) >= 0.99  # a batch's boxes are each frame's own
    assert det.openvino.compiles - after_warm_up == 2  # batches of 3 and 2, once each


def test_int8_quantises_on_calibration_frames(
    yolox: Path, cache_dir: Path, pedestrian_clip: Path
) -> None:
    frames = load_frames(pedestrian_clip, count=8)
    out = build_variant(yolox, "openvino-int8", 320, frames=lambda: frames)
    assert out.name.endswith("-int8-320_openvino_model")
    assert "FakeQuantize" in (out / "model.xml").read_text()  # really quantised
    int8 = UltralyticsDetector(DetectorConfig(model=str(yolox), imgsz=320, runtime="openvino-int8"))
    int8.load()
    assert int8.runtime == "openvino-int8"
    assert sum(len(int8.detect([f])[0]) for f in frames) > 0


def test_a_runtime_that_cannot_be_had_falls_back_and_says_so(
    yolox: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(runtimes, "openvino_available", lambda: "OpenVINO is not usable here (x)")
    detector = UltralyticsDetector(
        DetectorConfig(model=str(yolox), imgsz=320, runtime="openvino-bf16")
    )
    with caplog.at_level(logging.WARNING):
        detector.load()
    assert detector.runtime == "onnxruntime"
    assert "OpenVINO is not usable here (x); falling back to onnxruntime" in caplog.text
    assert len(detector.detect([load_frames(yolox.parent.parent / "videos" / "TUD-Stadtmitte.mp4",
                                            1)[0]])[0]) > 0  # fmt: skip


def test_worker_serves_the_profiled_runtime_and_seeds_its_pool(
    yolox: Path, cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rung = LadderModel(path=str(yolox), imgsz=320, accuracy=25.5)
    settings = Settings(ladder=[rung])
    with caplog.at_level(logging.INFO):
        (plain, _), = build_detectors(settings).values()  # fmt: skip
    assert isinstance(plain, UltralyticsDetector) and plain.cfg.runtime == "auto"
    assert "no profile for this machine" in caplog.text

    profile = ModelProfile(
        label=rung.label, path=str(yolox), imgsz=320, accuracy=25.5, mean_ms=9.5, std_ms=0.5,
        p95_ms=10.0, samples=30, threads=1, machine=ProfileCache().machine,
    )  # fmt: skip
    cache = ProfileCache()
    cache.put(profile)
    cache.put(dataclasses.replace(profile, runtime="openvino-bf16", mean_ms=7.5, f1_vs_fp32=0.99))
    detectors = build_detectors(settings)
    (served, _), = detectors.values()  # fmt: skip
    assert isinstance(served, UltralyticsDetector) and served.cfg.runtime == "openvino-bf16"
    served.load()
    pool = DetectorPool(detectors)
    try:
        pool.profile()
        (info,) = pool.model_infos()
        assert info.mean_ms == 7.5 and info.std_ms == 0.5  # the cached figures, not re-measured
    finally:
        pool.shutdown()
