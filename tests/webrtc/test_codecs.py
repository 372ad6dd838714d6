"""Codec preferences and bitrate clamps."""

from __future__ import annotations

import aiortc.codecs.h264
import aiortc.codecs.vpx
import pytest
from aiortc import RTCPeerConnection

from mobieye.webrtc.codecs import get_bitrate_limits, prefer_codec, set_bitrate_limits
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
