"""``mobieye models throughput``: the detector by batch size, on a real model and real frames."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from mobieye.config import DetectorConfig, LadderModel
from mobieye.detector import Image, resolve_model
from mobieye.errors import ModelError
from mobieye.models.profile import load_frames
from mobieye.models.throughput import format_throughput, measure_throughput
from tests.models.test_cli import run_cli


@pytest.fixture(scope="module")
def frames(data_dir: Path) -> list[Image]:
    return load_frames(data_dir / "videos" / "TUD-Stadtmitte.mp4", 8)


def test_rows_per_batch_with_batch_one_as_the_baseline(
    model_path: Path, frames: list[Image]
) -> None:
    model = LadderModel(path=str(model_path), imgsz=320, accuracy=25.8)
    rows = measure_throughput(model, frames, [4, 1, 2], calls=2, device="cpu")
    assert [r.batch for r in rows] == [1, 2, 4]
    assert rows[0].speedup == 1.0 and all(r.device == "cpu" and r.calls == 2 for r in rows)
    for r in rows:
        assert r.ms_per_call > 0 and r.p95_ms_per_call > 0
        assert r.ms_per_image == pytest.approx(r.ms_per_call / r.batch, rel=1e-3)
        assert r.images_per_s == pytest.approx(1000 * r.batch / r.ms_per_call, rel=1e-2)
        assert r.speedup == pytest.approx(r.images_per_s / rows[0].images_per_s, abs=0.02)
    table = format_throughput(rows)
    assert table.count("\n") == 4 and "| yolox_nano_dynamic_ultralytics@320 | cpu | 4 |" in table


def test_architecture_yaml_builds_offline_untrained(
    frames: list[Image], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    ref = resolve_model("yolo11n.yaml", allow_untrained=True)
    assert ref.path is None and ref.untrained
    # Anywhere boxes matter (a worker, the ladder, the bench) it is refused, saying why.
    with pytest.raises(ModelError, match="architecture without trained weights"):
        resolve_model("yolo11n.yaml")
    rows = measure_throughput(
        LadderModel(path="yolo11n.yaml", imgsz=320, accuracy=39.5), frames, [1], calls=1
    )
    assert rows[0].label == "yolo11n@320" and rows[0].ms_per_call > 0


def test_device_setting_is_checked() -> None:
    for good in ("cpu", "cuda", "cuda:1", "mps", "0"):
        assert DetectorConfig(device=good).device == good
    with pytest.raises(ValidationError, match="device"):
        DetectorConfig(device="gpu0")
    with pytest.raises(ValidationError, match="half"):
        DetectorConfig(device="cpu", half=True)


def test_cli_writes_table_and_json(tmp_path: Path, model_path: Path) -> None:
    out, md = tmp_path / "t.json", tmp_path / "t.md"
    r = run_cli(
        tmp_path / "cache", "throughput", "--ladder", f"{model_path}@320", "--batch", "1,2",
        "--calls", "2", "--json", str(out), "--markdown", str(md),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "| model | device | batch |" in r.stdout and "Machine: cpu: " in r.stdout
    assert "batch 2:" in r.stderr  # progress
    doc = json.loads(out.read_text())
    assert [row["batch"] for row in doc["rows"]] == [1, 2] and "cpu" in doc["devices"]
    assert md.read_text().startswith("| model | device | batch |")


@pytest.mark.parametrize(
    ("flag", "value", "reason"),
    [("--device", "gpu0", "--device 'gpu0'"), ("--batch", "1,x", "--batch takes whole numbers"),
     ("--batch", "0", "values must be 1..64"), ("--calls", "0", "--calls must be at least 1")],
)  # fmt: skip
def test_cli_refuses_bad_values(
    tmp_path: Path, model_path: Path, flag: str, value: str, reason: str
) -> None:
    r = run_cli(tmp_path / "cache", "throughput", "--ladder", f"{model_path}@320", flag, value)
    assert r.returncode != 0 and reason in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
