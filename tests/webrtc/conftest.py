"""Fixtures for the aiortc tuning tests: loopback-only ICE, and aiortc restored after each test."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

try:
    import mobieye  # noqa: F401
except ModuleNotFoundError:  # not installed: run from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import aiortc.codecs.h264
import aiortc.codecs.vpx
import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder

from mobieye.webrtc.ice import confine_to_loopback

_PATCHABLE = (
    (aiortc.rtcrtpreceiver, "JitterBuffer"),
    (aiortc.rtcrtpreceiver, "TimestampMapper"),
    (aiortc.rtcrtpsender, "uint32_add"),
    (Vp8Encoder, "encode"),
    (H264Encoder, "encode"),
    *(
        (module, name)
        for module in (aiortc.codecs.vpx, aiortc.codecs.h264)
        for name in ("MIN_BITRATE", "MAX_BITRATE", "DEFAULT_BITRATE")
    ),
)


@pytest.fixture(autouse=True)
def loopback_only() -> None:
    """Network rule: no test here may reach anything but 127.0.0.1."""
    confine_to_loopback()


@pytest.fixture(autouse=True)
def restore_aiortc() -> Iterator[None]:
    """The patches under test are process-wide; undo them so tests stay independent."""
    saved = [(owner, name, owner.__dict__[name]) for owner, name in _PATCHABLE]
    yield
    for owner, name, value in saved:
        setattr(owner, name, value)
