"""A model file that isn't the one the config names by SHA-256 is refused at load, with both
hashes in the message; the worker advertises the hashes it serves."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from mobieye.config import DetectorConfig
from mobieye.detector import UltralyticsDetector
from mobieye.errors import ModelError
from mobieye.models.digest import model_digest


def test_the_digest_is_the_files_sha256(model_path: Path) -> None:
    assert model_digest(model_path) == hashlib.sha256(model_path.read_bytes()).hexdigest()


def test_a_directory_digest_covers_names_and_contents(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "model.xml").write_bytes(b"<xml/>")
    (tmp_path / "a" / "model.bin").write_bytes(b"\x00" * 10)
    before = model_digest(tmp_path / "a")
    (tmp_path / "a" / "model.bin").write_bytes(b"\x00" * 9 + b"\x01")
    assert model_digest(tmp_path / "a") != before


def test_a_swapped_model_is_refused_naming_both_hashes(model_path: Path, tmp_path: Path) -> None:
    good = model_digest(model_path)
    swapped = tmp_path / model_path.name
    shutil.copy(model_path, swapped)
    with swapped.open("r+b") as f:  # one flipped byte in the weights
        f.seek(swapped.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    detector = UltralyticsDetector(DetectorConfig(model=str(swapped), sha256=good))
    with pytest.raises(ModelError) as info:
        detector.load()
    message = str(info.value)
    assert good in message and model_digest(swapped) in message


def test_the_right_model_loads_and_reports_its_hash(model_path: Path) -> None:
    good = model_digest(model_path)
    detector = UltralyticsDetector(DetectorConfig(model=str(model_path), sha256=good.upper()))
    detector.load()
    assert detector.sha256 == good
