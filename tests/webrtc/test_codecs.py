"""Codec preferences, bitrate clamps and the bitrate hysteresis (real libvpx encoders)."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction

import aiortc.codecs.h264
import aiortc.codecs.vpx
import numpy as np
import pytest
from aiortc import RTCPeerConnection
from av import VideoFrame

from mobieye.webrtc.codecs import (
    get_bitrate_limits,
    install_bitrate_hysteresis,
    prefer_codec,
    set_bitrate_limits,
    uninstall_bitrate_hysteresis,
)
from mobieye.webrtc.ice import confine_to_loopback, rtc_configuration


async def _offered_video_codecs(codec: str, exclusive: bool, on_pc: bool) -> list[str]:
    confine_to_loopback()
    pc = RTCPeerConnection(rtc_configuration([]))
    try:
        transceiver = pc.addTransceiver("video")
        prefer_codec(pc if on_pc else transceiver, "video", codec, exclusive=exclusive)
        await pc.setLocalDescription(await pc.createOffer())
        return [
            line.split()[1].split("/")[0]
            for line in pc.localDescription.sdp.splitlines()
            if line.startswith("a=rtpmap:")
        ]
    finally:
        await pc.close()


@pytest.mark.asyncio
async def test_prefer_h264_puts_it_first_and_keeps_rtx() -> None:
    names = await _offered_video_codecs("h264", exclusive=False, on_pc=False)
    assert names[0] == "H264"
    assert "VP8" in names and "rtx" in names


@pytest.mark.asyncio
async def test_prefer_exclusive_on_peer_connection() -> None:
    names = await _offered_video_codecs("vp8", exclusive=True, on_pc=True)
    assert names == ["VP8", "rtx"]


@pytest.mark.asyncio
async def test_prefer_unknown_codec_or_kind_fails() -> None:
    pc = RTCPeerConnection(rtc_configuration([]))
    try:
        with pytest.raises(ValueError, match="not supported"):
            prefer_codec(pc.addTransceiver("video"), "video", "av1")
        with pytest.raises(ValueError, match="transceiver"):
            prefer_codec(pc, "audio", "opus")
    finally:
        await pc.close()


def test_set_bitrate_limits_clamps_encoders() -> None:
    set_bitrate_limits(300_000, 4_000_000)
    assert get_bitrate_limits("vp8") == (300_000, 4_000_000, aiortc.codecs.vpx.DEFAULT_BITRATE)
    assert aiortc.codecs.h264.MAX_BITRATE == 4_000_000
    encoder = aiortc.codecs.vpx.Vp8Encoder()
    encoder.target_bitrate = 10_000_000  # what a generous REMB would ask for
    assert encoder.target_bitrate == 4_000_000
    encoder.target_bitrate = 1
    assert encoder.target_bitrate == 300_000


def test_set_bitrate_limits_default_and_single_codec() -> None:
    h264_before = get_bitrate_limits("h264")
    set_bitrate_limits(100_000, 200_000, codecs=("vp8",))
    assert get_bitrate_limits("vp8") == (100_000, 200_000, 200_000)  # old default clamped
    assert get_bitrate_limits("h264") == h264_before
    set_bitrate_limits(100_000, 900_000, default_bps=150_000, codecs=("vp8",))
    assert aiortc.codecs.vpx.Vp8Encoder().target_bitrate == 150_000


@pytest.mark.parametrize(
    ("low", "high", "default"),
    [(0, 1000, None), (-5, 1000, None), (2000, 1000, None), (100, 1000, 5000)],
)
def test_set_bitrate_limits_validates(low: int, high: int, default: int | None) -> None:
    before = get_bitrate_limits("vp8")
    with pytest.raises(ValueError):
        set_bitrate_limits(low, high, default)
    assert get_bitrate_limits("vp8") == before


@pytest.fixture
def vp8_limits() -> Iterator[None]:
    before = get_bitrate_limits("vp8")
    yield
    set_bitrate_limits(before[0], before[1], before[2], codecs=("vp8",))
    uninstall_bitrate_hysteresis()


def test_hysteresis_drops_small_moves_and_passes_big_ones(vp8_limits: None) -> None:
    install_bitrate_hysteresis(0.3)
    set_bitrate_limits(250_000, 1_500_000, default_bps=500_000, codecs=("vp8",))
    encoder = aiortc.codecs.vpx.Vp8Encoder()
    for remb, expected in [(540_000, 500_000), (600_000, 500_000), (700_000, 700_000),
                           (650_000, 700_000), (400_000, 400_000)]:  # fmt: skip
        encoder.target_bitrate = remb
        assert encoder.target_bitrate == expected, remb
    # The controller narrows the limits (a new level): the next move gets through, clamped.
    set_bitrate_limits(250_000, 350_000, codecs=("vp8",))
    encoder.target_bitrate = 900_000
    assert encoder.target_bitrate == 350_000
    encoder.target_bitrate = 320_000  # a wiggle inside the level
    assert encoder.target_bitrate == 350_000
    with pytest.raises(ValueError):
        install_bitrate_hysteresis(1.5)


def _encode(encoder: aiortc.codecs.vpx.Vp8Encoder, i: int) -> object:
    image = np.full((96, 128, 3), (i * 37) % 255, np.uint8)
    frame = VideoFrame.from_ndarray(image, format="bgr24")
    frame.pts, frame.time_base = i * 3000, Fraction(1, 90_000)
    encoder.encode(frame)
    return encoder.codec


@pytest.mark.parametrize("hysteresis", [False, True])
def test_a_remb_wiggle_restarts_the_stock_encoder_only(vp8_limits: None, hysteresis: bool) -> None:
    if hysteresis:
        install_bitrate_hysteresis(0.3)
    else:
        uninstall_bitrate_hysteresis()
    set_bitrate_limits(250_000, 1_500_000, default_bps=500_000, codecs=("vp8",))
    encoder = aiortc.codecs.vpx.Vp8Encoder()
    first = _encode(encoder, 0)
    _encode(encoder, 1)
    encoder.target_bitrate = 600_000  # +20%: what REMB does every few seconds
    restarted = _encode(encoder, 2) is not first
    assert restarted is not hysteresis  # a restart is a new libvpx encoder and a keyframe
