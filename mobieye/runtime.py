"""Process-wide set-up: logging, and keeping ultralytics from reaching for the network."""

from __future__ import annotations

import faulthandler
import ipaddress
import logging
import os
import socket
from pathlib import Path

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
