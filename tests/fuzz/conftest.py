"""The fuzz package's fixtures, and its report of the cases each target ran (see common.py)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fuzz.common import CASE_COUNTS, CASES, OBSERVED, REPORT

KEEP_ENV = ("MOBIEYE_DATA_DIR", "MOBIEYE_CACHE_DIR")  # where the data is, not what it says


@pytest.fixture(scope="session", autouse=True)
def _regex_strategies_imported() -> None:
    # Before any test, not lazily mid-test: CPython 3.11.7 can fail compile() after a
    # RecursionError ("AST constructor recursion depth mismatch"), and from_regex imports this
    # on first use. (Not at conftest import: hypothesis warns about work during collection.)
    import hypothesis.strategies._internal.regex  # noqa: F401


@pytest.fixture(scope="module", autouse=True)
def _no_mobieye_env() -> Iterator[None]:
    # The developer's MOBIEYE_* variables would change what load_settings accepts.
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            ours = name.startswith("MOBIEYE_FUZZ_") or name in KEEP_ENV
            if name.startswith("MOBIEYE_") and not ours:
                mp.delenv(name)
        yield


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if REPORT and CASE_COUNTS:
        report = {"cases": dict(CASE_COUNTS), "observed": dict(OBSERVED)}
        Path(REPORT).write_text(json.dumps(report, indent=1, sort_keys=True))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not CASE_COUNTS:
        return
    terminalreporter.section(f"fuzz cases (MOBIEYE_FUZZ_CASES={CASES})", sep="-")
    for target, n in sorted(CASE_COUNTS.items()):
        terminalreporter.write_line(f"{n:8d}  {target}")
    if OBSERVED:
        terminalreporter.section("fuzz outcomes observed", sep="-")
        for what, n in sorted(OBSERVED.items()):
            terminalreporter.write_line(f"{n:8d}  {what}")
