"""The model ladder: the default one from the shared data, and ``PATH[@IMGSZ][=ACC],...`` specs."""

from __future__ import annotations

from pathlib import Path

import pytest

from mobieye.errors import ConfigError, MobiEyeError, ModelError
from mobieye.models.ladder import default_ladder, ladder_from_spec, published_accuracy


@pytest.fixture(scope="module")
def models(data_dir: Path) -> Path:
    return data_dir / "models"


def test_default_ladder_is_cheapest_first_with_published_accuracy(data_dir: Path) -> None:
    ladder = default_ladder(data_dir)
    assert [m.label for m in ladder] == [
        "yolox_nano@320",
        "yolox_nano@416",
        "yolov5n@480",
        "yolov5n@640",
    ]
    accuracies = [m.accuracy for m in ladder]
    assert accuracies == sorted(accuracies) and len(set(accuracies)) == 4
    # The published figure holds at the size it was published at.
    assert ladder[1].accuracy == 25.8
    assert ladder[3].accuracy == 28.0
    assert all(Path(m.path).is_file() for m in ladder)


def test_default_ladder_keeps_only_existing_files(tmp_path: Path, models: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "yolov5n_dynamic_ultralytics.onnx").symlink_to(
        models / "yolov5n_dynamic_ultralytics.onnx"
    )
    assert [m.label for m in default_ladder(tmp_path)] == ["yolov5n@480", "yolov5n@640"]
    assert default_ladder(tmp_path / "nowhere") == []


def test_published_accuracy_grows_with_input_size() -> None:
    sizes = [256, 320, 416, 512, 640, 800]
    values = [published_accuracy("yolox_nano_dynamic_ultralytics", s) for s in sizes]
    assert all(v is not None for v in values)
    assert values == sorted(values)  # type: ignore[type-var]
    assert published_accuracy("someone_elses_model", 320) is None


def test_spec_order_is_the_ranking(models: Path) -> None:
    yolox = models / "yolox_nano_dynamic_ultralytics.onnx"
    v5 = models / "yolov5n_dynamic_ultralytics.onnx"
    ladder = ladder_from_spec(f"{yolox}@320, {yolox}@416 ,{v5}@640")
    assert [(Path(m.path), m.imgsz) for m in ladder] == [(yolox, 320), (yolox, 416), (v5, 640)]
    assert [m.accuracy for m in ladder] == [1.0, 2.0, 3.0]
    assert ladder[0].label == "yolox_nano_dynamic_ultralytics@320"


def test_spec_defaults_and_declared_accuracy(models: Path) -> None:
    nanodet = models / "nanodet_m_320_ultralytics.onnx"
    v5 = models / "yolov5n_dynamic_ultralytics.onnx"
    ladder = ladder_from_spec(f"{nanodet}=20.6,{v5}=28")
    # A fixed-shape model gets its own size; a dynamic one the detector default.
    assert [m.imgsz for m in ladder] == [320, 416]
    assert [m.accuracy for m in ladder] == [20.6, 28.0]


@pytest.mark.parametrize(
    ("spec", "error", "needles"),
    [
        ("", ConfigError, ["empty ladder"]),
        ("{v5}@320,,{v5}@640", ConfigError, ["entry 2", "empty entry"]),
        ("{v5}@big", ConfigError, ["entry 1", "'big' is not an integer"]),
        ("{v5}@320,{v5}@300", ConfigError, ["entry 2", "@300'", "multiple of 32"]),
        ("{v5}@320,/no/such/model.onnx@320", ModelError, ["entry 2", "/no/such/model.onnx"]),
        ("{v5}@320,{v5}@320", ConfigError, ["entry 2", "already on the ladder"]),
        ("{v5}@320=28,{v5}@640", ConfigError, ["entry 2", "for every ladder entry or for none"]),
        ("{v5}@320=28,{v5}@640=20", ConfigError, ["entry 2", "least accurate first"]),
        ("{v5}@320=high", ConfigError, ["entry 1", "'high' is not a number"]),
        ("{v5}@320=101", ConfigError, ["entry 1", "accuracy"]),
        ("{nanodet}@416", ConfigError, ["entry 1", "fixed 320x320", "@320"]),
        ("{readme}@320", ModelError, ["entry 1", "unknown format"]),
    ],
)
def test_bad_specs_name_the_entry(
    models: Path, spec: str, error: type[MobiEyeError], needles: list[str]
) -> None:
    spec = spec.format(
        v5=models / "yolov5n_dynamic_ultralytics.onnx",
        nanodet=models / "nanodet_m_320_ultralytics.onnx",
        readme=models.parent / "PROVENANCE.md",
    )
    with pytest.raises(error) as info:
        ladder_from_spec(spec)
    for needle in needles:
        assert needle in str(info.value)
