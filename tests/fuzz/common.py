"""What every fuzz target shares: its case budget, a per-case hang guard and the case tally.

``MOBIEYE_FUZZ_CASES`` (default 100) is the number of cases each target runs: hypothesis'
``max_examples``, schemathesis' examples per API operation. ``MOBIEYE_FUZZ_REPORT``, when set,
names a JSON file that receives the cases each target actually ran (scripts/fuzz.sh prints it).
"""

from __future__ import annotations

import functools
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, ParamSpec, TypeVar

from hypothesis import HealthCheck, settings

CASES = int(os.environ.get("MOBIEYE_FUZZ_CASES", "100"))
# One case of any target takes milliseconds; this long is a hang, even on a loaded 2-core box.
CASE_BUDGET_S = float(os.environ.get("MOBIEYE_FUZZ_CASE_S", "10"))
REPORT = os.environ.get("MOBIEYE_FUZZ_REPORT")

FUZZ = settings(
    max_examples=CASES,
    # Per-case time is guarded by within(); hypothesis' deadline would flake on a shared CPU.
    deadline=None,
    # Failing inputs replay first on the next run (hypothesis' database in .hypothesis/, which
    # ignores itself in git); the blob reproduces one anywhere.
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.large_base_example,
    ],
)


def backstop_s(per_case_s: float = 0.5, fixed_s: float = 120.0) -> float:
    """The whole-test backstop for pytest-timeout: grows with the case count."""
    return fixed_s + CASES * per_case_s


CASE_COUNTS: Counter[str] = Counter()
OBSERVED: Counter[str] = Counter()  # outcomes worth a look (e.g. what aiortc raised), by kind

P = ParamSpec("P")
R = TypeVar("R")


def target_name(fn: Callable[..., object]) -> str:
    """A fuzz target's name in reports: ``test_file.py::test_function``."""
    return f"{fn.__module__.rsplit('.', 1)[-1]}.py::{fn.__name__}"


def counted(fn: Callable[P, R]) -> Callable[P, R]:
    """Count each case the decorated test body runs (the report says how many really ran)."""
    target = target_name(fn)

    @functools.wraps(fn)
    def inner(*args: P.args, **kwargs: P.kwargs) -> R:
        CASE_COUNTS[target] += 1
        return fn(*args, **kwargs)

    return inner


class Hang(AssertionError):
    """A case ran past CASE_BUDGET_S."""


# The watchdog interrupts the main thread with SIGUSR1, not SIGALRM: pytest-timeout owns that.
_armed: dict[int, str] = {}


def _on_sigusr1(signum: int, frame: FrameType | None) -> None:
    if _armed:
        raise Hang(next(iter(_armed.values())))


signal.signal(signal.SIGUSR1, _on_sigusr1)


@contextmanager
def within(what: str, seconds: float = CASE_BUDGET_S) -> Iterator[None]:
    """Fail with :class:`Hang` naming ``what`` if the block runs longer than ``seconds``."""
    token = id(object()) ^ time.monotonic_ns()
    main = threading.main_thread().ident
    assert main is not None and threading.get_ident() == main, "within() needs the main thread"

    def fire() -> None:
        if token in _armed:
            signal.pthread_kill(main, signal.SIGUSR1)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    _armed[token] = f"hang: {what} still running after {seconds:g} s"
    timer.start()
    try:
        yield
    finally:
        # Disarm first: a late signal then finds nothing armed and is ignored.
        _armed.pop(token, None)
        timer.cancel()


def short(value: Any, limit: int = 300) -> str:
    """An input as a failure message shows it."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def non_string_top_level_key(content: bytes | str) -> bool:
    """A YAML file whose top-level mapping has a key that is not a string: a known crash of
    load_settings (tests/fuzz/test_config.py, xfail), which the general targets step around."""
    import yaml

    try:
        data = yaml.safe_load(content)
    except (yaml.YAMLError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and any(not isinstance(k, str) for k in data)
