"""A model file's SHA-256: checked at load against the one the config expects (a swapped or
corrupted model is refused, never served), and advertised by the worker that serves it."""

from __future__ import annotations

import hashlib
from pathlib import Path

from mobieye.errors import ModelError

CHUNK = 1024 * 1024


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of one file, read in chunks (models, clips, data files)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def model_digest(path: Path) -> str:
    """Hex SHA-256 of a model file; of an export directory (OpenVINO), of its files' relative
    names and contents in name order."""
    if not path.is_dir():
        return sha256_of(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with file.open("rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def verified_digest(path: Path, expected: str | None) -> str:
    """The file's digest; ModelError with both hashes when it isn't the expected one."""
    actual = model_digest(path)
    if expected is not None and actual != expected.lower():
        raise ModelError(
            f"model {path} has SHA-256 {actual}, not the expected {expected.lower()}: "
            "refused (a different or damaged file; fix the file or the configured sha256)"
        )
    return actual
