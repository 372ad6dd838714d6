"""Keyframe detection on real VP8 and H264 bitstreams made with PyAV."""

from __future__ import annotations

from fractions import Fraction
from typing import cast

import av
import numpy as np
import pytest
from aiortc.codecs.h264 import H264Encoder, h264_depayload
from aiortc.codecs.vpx import Vp8Encoder, vp8_depayload
from av.video.codeccontext import VideoCodecContext

from mobieye.webrtc.keyframes import is_h264_keyframe, is_keyframe, is_vp8_keyframe


def _frames(count: int, width: int = 160, height: int = 120) -> list[av.VideoFrame]:
    rng = np.random.default_rng(1)
    base = rng.integers(0, 255, (height * 3 // 2, width), dtype=np.uint8)
    frames = []
    for k in range(count):
        frame = av.VideoFrame.from_ndarray(np.roll(base, 2 * k, axis=1), format="yuv420p")
        frame.pts = k
        frame.time_base = Fraction(1, 30)
        frames.append(frame)
    return frames


def _encode(codec_name: str, force_keyframe_at: int | None = None) -> list[bytes]:
    codec = cast(VideoCodecContext, av.CodecContext.create(codec_name, "w"))
    codec.width, codec.height, codec.pix_fmt = 160, 120, "yuv420p"
    codec.time_base = Fraction(1, 30)
    codec.gop_size = 1000  # no periodic keyframes: only the first, and the forced one
    if codec_name == "libx264":
        codec.options = {"tune": "zerolatency", "preset": "ultrafast"}
    else:
        codec.options = {"deadline": "realtime", "lag-in-frames": "0"}
    out = []
    for k, frame in enumerate(_frames(8)):
        if k == force_keyframe_at:
            frame.pict_type = av.video.frame.PictureType.I
        out.append(b"".join(bytes(p) for p in codec.encode(frame)))
    out.append(b"".join(bytes(p) for p in codec.encode(None)))
    return [data for data in out if data]


def _nal_units(data: bytes) -> list[bytes]:
    return [unit for unit in data.split(b"\x00\x00\x01") if unit]


def test_vp8_first_frame_is_key_later_ones_are_not() -> None:
    frames = _encode("libvpx")
    assert is_vp8_keyframe(frames[0]) and is_keyframe(frames[0])
    assert not any(is_keyframe(data) for data in frames[1:])


def test_vp8_forced_keyframe() -> None:
    frames = _encode("libvpx", force_keyframe_at=5)
    assert [is_keyframe(d) for d in frames] == [
        True,
        False,
        False,
        False,
        False,
        True,
        False,
        False,
    ]


def test_h264_first_frame_is_idr_later_ones_are_not() -> None:
    frames = _encode("libx264")
    assert is_h264_keyframe(frames[0]) and is_keyframe(frames[0])
    assert not any(is_keyframe(data) for data in frames[1:])


def test_h264_sps_pps_without_idr_is_not_a_keyframe() -> None:
    first = _encode("libx264")[0]
    parameter_sets = [u for u in _nal_units(first) if u[0] & 0x1F in (7, 8)]
    assert len(parameter_sets) == 2
    assert not is_keyframe(b"".join(b"\x00\x00\x00\x01" + u for u in parameter_sets))


@pytest.mark.parametrize("codec", ["vp8", "h264"])
def test_keyframe_survives_aiortc_packetization(codec: str) -> None:
    """The buffer sees depayloaded data, exactly as aiortc's receiver stores it on packets."""
    encoder = Vp8Encoder() if codec == "vp8" else H264Encoder()
    depayload = vp8_depayload if codec == "vp8" else h264_depayload
    flags = []
    for k, frame in enumerate(_frames(6)):
        payloads, _ = encoder.encode(frame, force_keyframe=k == 4)
        flags.append(is_keyframe(b"".join(depayload(p) for p in payloads)))
    assert flags == [True, False, False, False, True, False]


def test_garbage_is_not_a_keyframe() -> None:
    assert not is_keyframe(b"")
    assert not is_keyframe(b"\x9d\x01\x2a")
    assert not is_keyframe(b"\x00\x00\x00\x01\x41\x9a")  # H264 non-IDR slice
    assert is_keyframe(b"\x00\x00\x01\x65\x88")  # IDR behind a 3-byte start code
