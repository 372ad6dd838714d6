"""Process-wide set-up: logging, and keeping ultralytics from reaching for the network."""

from __future__ import annotations

import asyncio
import ctypes
import faulthandler
import ipaddress
import logging
import os
import signal
import socket
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)

CACHE_DIR = Path(os.environ.get("MOBIEYE_CACHE_DIR", Path.home() / ".cache" / "mobieye"))


def configure_ultralytics_env() -> None:
    """Must run before ``import ultralytics``; explicit environment settings win.

    ultralytics pip-installs missing packages at run time unless told not to, writes settings to
    the home directory, and (with YOLO_OFFLINE=1, as tests and CI set) stays off the network.
    """
    cfg_dir = CACHE_DIR / "ultralytics"
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(cfg_dir))
    os.environ.setdefault("MPLCONFIGDIR", str(CACHE_DIR / "matplotlib"))
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("YOLO_VERBOSE", "false")
    Path(os.environ["YOLO_CONFIG_DIR"]).mkdir(parents=True, exist_ok=True)


def setup_logging(level: str = "INFO") -> None:
    # A crash in native code (a codec, ONNX Runtime, OpenCV) would otherwise end the process
    # without a word: print every thread's Python stack on SIGSEGV, SIGABRT and the like.
    faulthandler.enable()
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # aiortc/aioice log every packet at DEBUG and some routine events at INFO.
    for noisy in ("aioice", "aiortc", "ultralytics", "httpx", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def default_data_dir() -> Path:
    """Real models and clips: ``$MOBIEYE_DATA_DIR`` or ``../shared/data`` beside the checkout."""
    env = os.environ.get("MOBIEYE_DATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def is_loopback_host(host: str) -> bool:
    """Whether binding ``host`` keeps a server on this machine (a wildcard does not)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


async def until_signalled(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main``; SIGTERM or SIGINT cancels it, once, so it can finish cleanly (write its
    report, stop its children) instead of dying where it stands."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(main)
    caught: list[str] = []

    def stop(name: str) -> None:
        if caught:
            log.warning("%s again: still stopping", name)
            return
        caught.append(name)
        log.warning("%s: stopping", name)
        task.cancel()

    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop, sig.name)
    try:
        return await task
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """For ``preexec_fn``: the child gets SIGTERM when the process that started it dies, even
    by SIGKILL (Linux), so no worker is ever left orphaned."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def interrupt_on_sigterm() -> None:
    """Make SIGTERM raise KeyboardInterrupt in the main thread, as SIGINT does, so a
    synchronous command's ``finally`` blocks and context managers run."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
