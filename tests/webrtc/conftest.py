"""Fixtures for the aiortc tuning tests: loopback-only ICE, and aiortc restored after each test."""

from __future__ import annotations

from collections.abc import Iterator

import aiortc.codecs.h264
import aiortc.codecs.vpx
import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
import pytest
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


# Captured at collection, before any test (here or elsewhere in the session) patched aiortc.
_STOCK = [(owner, name, owner.__dict__[name]) for owner, name in _PATCHABLE]


@pytest.fixture(autouse=True)
def stock_aiortc() -> Iterator[None]:
    """Each test starts from stock aiortc, and leaves aiortc as the session had it."""
    saved = [(owner, name, owner.__dict__[name]) for owner, name in _PATCHABLE]
    for owner, name, value in _STOCK:
        setattr(owner, name, value)
    yield
    for owner, name, value in saved:
        setattr(owner, name, value)
