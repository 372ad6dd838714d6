"""No dataclass that holds arrays or frames gets a generated ``__eq__``.

A generated ``__eq__`` compares fields with ``==``: for numpy arrays that raises (different
shapes) or is ambiguous (same shapes). ``deque.remove`` and ``in`` call it, which is how the
detector pool's dispatcher died with several streams queued (issue 17).
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import re

import pytest

PACKAGES = ("mobieye", "edge_agent", "cloud_worker")
ARRAY_TYPES = re.compile(r"NDArray|ndarray|\bImage\b|\bGray\b|Detections|FloatArray|IntArray|"
                         r"VideoFrame|ArrivedResult|CapturedFrame")  # fmt: skip


def _dataclasses() -> list[type]:
    found = []
    for name in PACKAGES:
        package = importlib.import_module(name)
        for info in pkgutil.walk_packages(package.__path__, name + "."):
            if info.name.endswith("__main__"):
                continue
            module = importlib.import_module(info.name)
            for obj in vars(module).values():
                if (
                    isinstance(obj, type)
                    and dataclasses.is_dataclass(obj)
                    and obj.__module__ == module.__name__
                ):
                    found.append(obj)
    return found


def test_walks_the_packages() -> None:
    names = {cls.__name__ for cls in _dataclasses()}
    assert {"Detections", "DecodedFrame", "CapturedFrame"} <= names


@pytest.mark.parametrize("cls", _dataclasses(), ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_dataclasses_holding_arrays_compare_by_identity(cls: type) -> None:
    holds = [f.name for f in dataclasses.fields(cls) if ARRAY_TYPES.search(str(f.type))]
    if holds and cls.__dataclass_params__.eq:  # type: ignore[attr-defined]
        pytest.fail(f"{cls.__qualname__} holds {', '.join(holds)} but has a generated __eq__: "
                    "declare it @dataclass(eq=False)")  # fmt: skip
