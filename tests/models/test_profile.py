"""Profiling real models on real frames, and the profile cache."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import pytest

from mobieye.config import LadderModel
from mobieye.detector import UltralyticsDetector
from mobieye.models.profile import (
    ModelProfile,
    ProfileCache,
    format_profiles,
    load_frames,
    profile_ladder,
)


@pytest.fixture()
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts model loads, so a cache hit is seen to load nothing."""
    seen: list[str] = []
    original = UltralyticsDetector.load

    def counting_load(self: UltralyticsDetector) -> None:
        seen.append(self.ref.spec)
        original(self)

    monkeypatch.setattr(UltralyticsDetector, "load", counting_load)
    return seen


def test_profile_two_real_models_then_reuse_the_cache(
    data_dir: Path, pedestrian_clip: Path, tmp_path: Path, loads: list[str]
) -> None:
    small = LadderModel(
        path=str(data_dir / "models" / "yolox_nano_dynamic_ultralytics.onnx"),
        imgsz=320,
        accuracy=25.5,
    )
    large = LadderModel(
        path=str(data_dir / "models" / "yolov5n_dynamic_ultralytics.onnx"),
        imgsz=640,
        accuracy=28.0,
    )
    cache = ProfileCache(tmp_path / "profiles.json")
    said: list[str] = []
    first = profile_ladder(
        [small, large], 1, pedestrian_clip, cache, progress=said.append, repeats=8
    )
    assert len(loads) == 2
    assert [p.label for p in first] == [small.label, large.label]
    for p in first:
        assert p.mean_ms > 0 and p.std_ms > 0 and p.p95_ms >= p.mean_ms * 0.5
        assert p.samples == 8 and p.threads == 1 and p.machine == cache.machine
    assert first[1].mean_ms > first[0].mean_ms  # yolov5n@640 costs more than yolox_nano@320

    said.clear()
    second = profile_ladder(
        [small, large], 1, pedestrian_clip, cache, progress=said.append, repeats=8
    )
    assert second == first and len(loads) == 2
    assert len(said) == 2 and all(msg.endswith("(cached)") for msg in said)
    # Other thread count: measured again.
    profile_ladder([small], 2, pedestrian_clip, cache, repeats=3)
    assert len(loads) == 3
    table = format_profiles(second, cached={f"{small.label}/onnxruntime"})
    assert f"| {small.label} (cached) |" in table and f"| {large.label} |" in table


def test_second_call_loads_nothing(
    data_dir: Path, pedestrian_clip: Path, tmp_path: Path, loads: list[str]
) -> None:
    model = LadderModel(
        path=str(data_dir / "models" / "yolox_nano_dynamic_ultralytics.onnx"),
        imgsz=320,
        accuracy=1,
    )
    cache = ProfileCache(tmp_path / "profiles.json")
    (first,) = profile_ladder([model], 1, pedestrian_clip, cache, repeats=3)
    assert len(loads) == 1
    # A missing clip proves the frames are not even read when everything is cached.
    (second,) = profile_ladder([model], 1, tmp_path / "no-clip.mp4", cache, repeats=3)
    assert second == first and len(loads) == 1
    (third,) = profile_ladder([model], 1, pedestrian_clip, cache, refresh=True, repeats=3)
    assert len(loads) == 2 and third.samples == 3


def test_frames_are_real_640x480(pedestrian_clip: Path) -> None:
    frames = load_frames(pedestrian_clip, count=5)
    assert len(frames) == 5 and frames[0].shape == (480, 640, 3)
    assert len({f.tobytes()[:100_000] for f in frames}) > 1


# --- the cache alone, with a stand-in model file -----------------------------------------------


@pytest.fixture()
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "m.onnx"
    path.write_bytes(b"weights")
    return path


def _profile(path: Path, imgsz: int = 320, threads: int = 1, samples: int = 10) -> ModelProfile:
    return ModelProfile(
        label=f"m@{imgsz}",
        path=str(path),
        imgsz=imgsz,
        accuracy=1.0,
        mean_ms=5.0,
        std_ms=0.5,
        p95_ms=6.0,
        samples=samples,
        threads=threads,
        machine="test CPU, 2 cores",
    )


def _cache(tmp_path: Path, machine: str = "test CPU, 2 cores") -> ProfileCache:
    return ProfileCache(tmp_path / "cache" / "profiles.json", machine=machine)


def _rung(path: Path, imgsz: int = 320, name: str | None = None) -> LadderModel:
    return LadderModel(path=str(path), imgsz=imgsz, accuracy=1.0, name=name)


def test_cache_round_trip_and_misses(tmp_path: Path, model_file: Path) -> None:
    cache = _cache(tmp_path)
    assert cache.get(_rung(model_file), 1) is None
    profile = _profile(model_file)
    cache.put(profile)
    assert cache.get(_rung(model_file), 1) == profile
    assert _cache(tmp_path).get(_rung(model_file), 1) == profile  # a new process sees it
    assert cache.get(_rung(model_file), 2) is None  # other thread count
    assert cache.get(_rung(model_file, imgsz=416), 1) is None  # other input size
    assert _cache(tmp_path, machine="other CPU, 64 cores").get(_rung(model_file), 1) is None
    # Another spelling of the same file is the same file.
    relative = os.path.relpath(model_file)
    hit = cache.get(_rung(Path(relative), name="renamed"), 1)
    assert hit is not None and hit.label == "renamed" and hit.path == relative
    # Fewer samples than asked for: measure again.
    assert cache.reusable(_rung(model_file), 1, repeats=10) == profile
    assert cache.reusable(_rung(model_file), 1, repeats=11) is None


def test_cache_invalidates_when_the_file_changes(tmp_path: Path, model_file: Path) -> None:
    cache = _cache(tmp_path)
    cache.put(_profile(model_file))
    model_file.write_bytes(b"new weights")
    assert cache.get(_rung(model_file), 1) is None
    cache.put(_profile(model_file))
    stat = model_file.stat()
    os.utime(model_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert cache.get(_rung(model_file), 1) is None


def test_cache_keeps_profiles_per_threads(tmp_path: Path, model_file: Path) -> None:
    cache = _cache(tmp_path)
    one, two = _profile(model_file, threads=1), _profile(model_file, threads=2)
    cache.put(one)
    cache.put(dataclasses.replace(two, mean_ms=3.0))
    assert cache.get(_rung(model_file), 1) == one
    hit = cache.get(_rung(model_file), 2)
    assert hit is not None and hit.mean_ms == 3.0
    data = json.loads(cache.path.read_text())
    assert data["version"] == 2 and len(data["profiles"]) == 2
    assert not list(cache.path.parent.glob(".profiles-*"))  # no temp files left behind


@pytest.mark.parametrize(
    "content",
    ["{not json", "[]", '{"version": 1, "profiles": []}', '{"version": 99, "profiles": {}}'],
)
def test_corrupt_cache_is_logged_and_ignored(
    tmp_path: Path, model_file: Path, caplog: pytest.LogCaptureFixture, content: str
) -> None:
    cache = _cache(tmp_path)
    cache.path.parent.mkdir(parents=True)
    cache.path.write_text(content)
    with caplog.at_level(logging.WARNING, logger="mobieye.models"):
        assert cache.get(_rung(model_file), 1) is None
    assert "ignoring profile cache" in caplog.text
    cache.put(_profile(model_file))  # replaces the corrupt file
    assert cache.get(_rung(model_file), 1) == _profile(model_file)


def test_bad_entry_is_a_miss(
    tmp_path: Path, model_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = _cache(tmp_path)
    cache.put(_profile(model_file))
    data = json.loads(cache.path.read_text())
    for entry in data["profiles"].values():
        entry["mean_ms"] = "fast"
    cache.path.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING, logger="mobieye.models"):
        assert cache.get(_rung(model_file), 1) is None
    assert "bad entry" in caplog.text


def test_stock_names_are_not_cached(tmp_path: Path) -> None:
    cache = _cache(tmp_path)
    cache.put(_profile(Path("yolo11n.pt")))
    assert not cache.path.exists()
    assert cache.get(_rung(Path("yolo11n.pt")), 1) is None


def test_chosen_runtime_is_the_fastest_within_tolerance_of_fp32(
    tmp_path: Path, model_file: Path
) -> None:
    cache = _cache(tmp_path)
    assert cache.chosen(_rung(model_file), 1) is None  # nothing profiled: the worker says so
    base = _profile(model_file)
    for runtime, mean, f1 in (
        ("onnxruntime", 10.0, 1.0),
        ("openvino-bf16", 7.0, 0.985),
        ("openvino-int8", 4.0, 0.95),  # fastest, but moves too many boxes
    ):
        cache.put(dataclasses.replace(base, runtime=runtime, mean_ms=mean, f1_vs_fp32=f1))
    chosen = cache.chosen(_rung(model_file), 1)
    assert chosen is not None and chosen.runtime == "openvino-bf16" and chosen.mean_ms == 7.0
    assert cache.chosen(_rung(model_file), 2) is None  # another thread budget
    assert _cache(tmp_path, machine="other CPU, 64 cores").chosen(_rung(model_file), 1) is None
    model_file.write_bytes(b"other weights")  # another file at the same path
    assert cache.chosen(_rung(model_file), 1) is None
