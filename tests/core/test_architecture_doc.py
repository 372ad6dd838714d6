"""docs/architecture.md names real files and functions, and a frame's life stays short."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "architecture.md").read_text()
MAX_FILES_PER_FRAME = 12
PACKAGES = ("mobieye", "edge_agent", "cloud_worker")


def _defined(path: Path) -> set[str]:
    """Top-level functions and classes, and Class.method, of one module."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names.add(node.name)
            names.update(
                f"{node.name}.{item.name}"
                for item in node.body
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
            )
    return names


def _frame_steps() -> list[str]:
    section = DOC.split("## The life of one frame", 1)[1]
    return re.findall(r"^\d+\. (.+?)(?=^\d+\. |\Z)", section, re.S | re.M)


def test_every_file_a_package_paragraph_names_exists() -> None:
    checked = 0
    for package, text in re.findall(
        r"^\*\*`(\w+)/`[^*]*\*\*(.+?)(?=^\*\*`|^## )", DOC, re.S | re.M
    ):
        for name in re.findall(r"`([\w/]+(?:\.py|/))`", text):
            path = (
                ROOT / name
                if name.startswith(("mobieye/", "edge_agent/", "cloud_worker/"))
                else ROOT / package / name
            )
            assert path.exists(), f"docs/architecture.md names {name} under {package}/"
            checked += 1
    assert checked > 40


def _symbols(step: str) -> list[str]:
    """Code names in a step: Class.method, functions with an underscore or CamelCase types."""
    return [
        s
        for s in re.findall(r"`([A-Za-z_][\w.]*)`", step)
        if not s.endswith(".py") and (s[0].isupper() or "_" in s or "." in s)
    ]


def test_every_step_of_a_frame_names_real_functions_of_real_files() -> None:
    steps = _frame_steps()
    assert len(steps) >= 10
    files: list[Path] = []
    for step in steps:
        path_s = re.match(r"`([\w/]+\.py)`", step)
        assert path_s, f"a step must start with its file: {step[:60]!r}"
        path = ROOT / path_s.group(1)
        assert path.is_file(), path
        files.append(path)
        first = _symbols(step)[0]
        assert first in _defined(path), f"{first} is not defined in {path_s.group(1)}"
    known = set().union(*(_defined(f) for pkg in PACKAGES for f in (ROOT / pkg).rglob("*.py")))
    for step in steps:
        for symbol in _symbols(step):
            assert symbol in known, f"{symbol} is named but defined nowhere in the project"
    assert len(set(files)) <= MAX_FILES_PER_FRAME, sorted(str(f) for f in set(files))
