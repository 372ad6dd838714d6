"""RTP timestamps that carry the edge's frame pts."""

from __future__ import annotations

from fractions import Fraction

import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
import av
import numpy as np
import pytest
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtcrtpreceiver import TimestampMapper
from aiortc.utils import uint32_add

from mobieye.webrtc.timestamps import (
    AbsoluteTimestampMapper,
    install_receiver_absolute_timestamps,
    install_sender_zero_timestamp_origin,
    uint32_add_call_sites,
    uninstall_receiver_absolute_timestamps,
    uninstall_sender_zero_timestamp_origin,
)


def test_absolute_mapper_keeps_first_timestamp_and_unwraps() -> None:
    mapper = AbsoluteTimestampMapper()
    top = (1 << 32) - 3000
    assert [mapper.map(ts) for ts in (top, 0, 3000)] == [top, 1 << 32, (1 << 32) + 3000]
    stock = TimestampMapper()
    assert stock.map(top) == 0  # what the patch removes


def test_absolute_mapper_is_not_fooled_by_a_small_step_back() -> None:
    mapper = AbsoluteTimestampMapper()
    assert [mapper.map(ts) for ts in (9000, 6000, 12000)] == [9000, 6000, 12000]


def test_uint32_add_is_only_used_for_the_random_origin() -> None:
    # The sender patch replaces a shared helper; it is only safe while this holds.
    assert uint32_add_call_sites() == ["_run_rtp"]


def test_sender_patch_install_and_uninstall() -> None:
    install_sender_zero_timestamp_origin()
    install_sender_zero_timestamp_origin()  # idempotent
    patched = aiortc.rtcrtpsender.uint32_add  # type: ignore[attr-defined]
    assert patched(0xDEADBEEF, 3000) == 3000
    assert patched(0xDEADBEEF, (1 << 32) + 5) == 5
    uninstall_sender_zero_timestamp_origin()
    assert aiortc.rtcrtpsender.uint32_add is uint32_add  # type: ignore[attr-defined]


def test_receiver_patch_install_and_uninstall() -> None:
    install_receiver_absolute_timestamps()
    install_receiver_absolute_timestamps()
    assert aiortc.rtcrtpreceiver.TimestampMapper is AbsoluteTimestampMapper
    uninstall_receiver_absolute_timestamps()
    assert aiortc.rtcrtpreceiver.TimestampMapper is TimestampMapper


@pytest.mark.parametrize("encoder_class", [Vp8Encoder, H264Encoder])
def test_encoder_timestamp_is_the_frame_pts(encoder_class: type[Vp8Encoder | H264Encoder]) -> None:
    # Stock Vp8Encoder reads pts after PyAV rescaled it to 1/1000000: 3000 came out as 2999.
    install_sender_zero_timestamp_origin()
    encoder = encoder_class()
    timestamps = []
    for k in range(7):
        frame = av.VideoFrame.from_ndarray(np.zeros((180, 160), np.uint8), format="yuv420p")
        frame.pts = k * 3000 + (k % 2)  # odd values too: no rounding anywhere
        frame.time_base = Fraction(1, 90000)
        timestamps.append(encoder.encode(frame)[1])
    assert timestamps == [k * 3000 + (k % 2) for k in range(7)]
