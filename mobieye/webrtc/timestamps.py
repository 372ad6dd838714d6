"""Carry the edge's frame pts through RTP unchanged, so results match frames exactly.

Stock aiortc hides the sender's frame clock twice: RTCRtpSender._run_rtp adds a random 32-bit
origin to every RTP timestamp, and the receiver's TimestampMapper subtracts the first timestamp it
sees. Its VP8 encoder also reads frame.pts only after PyAV has rescaled it in place to the codec's
1/1000000 time base, so a third of 30 fps timestamps come out one 90 kHz tick low.

With both install functions below called (the sender's on the edge, the receiver's on the
worker), a decoded frame's ``pts`` at the worker equals the ``pts`` the edge put on its
av.VideoFrame (time_base 1/90000): exactly while the edge's pts is below 2**32 (13.2 hours at
90 kHz) when the worker's first frame arrives, and modulo 2**32 after.

RFC 3550 (5.1) recommends a random initial timestamp to resist known-plaintext attacks when the
header is encrypted. SRTP never encrypts the RTP header (and its keystream depends on the SSRC and
packet index, not the timestamp), so the random origin buys no confidentiality for WebRTC media.
A zero origin only exposes the edge's pts (time since its stream started), and exact frame
matching between edge and worker needs that shared clock.
"""

from __future__ import annotations

import ast
import inspect
import logging
from collections.abc import Callable

import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
from aiortc.codecs.base import Encoder
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.mediastreams import VIDEO_TIME_BASE, convert_timebase
from aiortc.rtcrtpreceiver import TimestampMapper
from aiortc.utils import uint32_add
from av.frame import Frame

logger = logging.getLogger(__name__)

_STOCK_TIMESTAMP_MAPPER = TimestampMapper
_STOCK_UINT32_ADD = uint32_add
_RTP_TIMESTAMP_MODULUS = 1 << 32

EncodeMethod = Callable[[Encoder, Frame, bool], tuple[list[bytes], int]]
_VIDEO_ENCODERS: tuple[type[Encoder], ...] = (Vp8Encoder, H264Encoder)
_STOCK_ENCODE: dict[type[Encoder], EncodeMethod] = {cls: cls.encode for cls in _VIDEO_ENCODERS}


def _origin_free_uint32_add(origin: int, timestamp: int) -> int:
    # Stands in for uint32_add(timestamp_origin, enc_frame.timestamp), its only call site.
    return timestamp % _RTP_TIMESTAMP_MODULUS


def _exact_timestamp_encode(stock: EncodeMethod) -> EncodeMethod:
    def encode(
        self: Encoder, frame: Frame, force_keyframe: bool = False
    ) -> tuple[list[bytes], int]:
        # Read pts before PyAV rescales it in place (Vp8Encoder reads it after, and truncates).
        pts, time_base = frame.pts, frame.time_base
        payloads, timestamp = stock(self, frame, force_keyframe)
        if pts is not None and time_base is not None:
            timestamp = convert_timebase(pts, time_base, VIDEO_TIME_BASE)
        return payloads, timestamp

    return encode


class AbsoluteTimestampMapper(TimestampMapper):
    """Unwraps 32-bit RTP timestamps without subtracting the first one."""

    def __init__(self) -> None:
        super().__init__()
        self._last_raw: int | None = None
        self._last_unwrapped = 0

    def map(self, timestamp: int) -> int:
        if self._last_raw is None:
            unwrapped = timestamp
        else:
            # Signed distance from the previous timestamp, so a step across 2**32 is a small step.
            step = (timestamp - self._last_raw) % _RTP_TIMESTAMP_MODULUS
            if step >= _RTP_TIMESTAMP_MODULUS // 2:
                step -= _RTP_TIMESTAMP_MODULUS
            unwrapped = self._last_unwrapped + step
        self._last_raw = timestamp
        self._last_unwrapped = unwrapped
        return unwrapped


def uint32_add_call_sites() -> list[str]:
    """Names of the functions in aiortc.rtcrtpsender that call uint32_add (expected: _run_rtp)."""
    tree = ast.parse(inspect.getsource(aiortc.rtcrtpsender))
    sites: list[str] = []
    for function in ast.walk(tree):
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            sites.extend(
                function.name
                for node in ast.walk(function)
                if isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "uint32_add"
            )
    return sites


def install_sender_zero_timestamp_origin() -> None:
    """Edge side: RTP timestamp == the frame's pts in the 90 kHz clock. Idempotent.

    Replaces the module global ``uint32_add`` of aiortc.rtcrtpsender, whose only use there is
    adding the random origin (a different aiortc refuses the patch instead of mis-stamping), and
    makes the VP8/H264 encoders take the timestamp from the pts as it was before encoding.
    """
    try:
        sites = uint32_add_call_sites()
    except OSError:  # no source shipped: trust the pinned aiortc version
        sites = ["_run_rtp"]
    if sites != ["_run_rtp"]:
        raise RuntimeError(f"aiortc.rtcrtpsender uses uint32_add in {sites}; patch is unsafe")
    setattr(aiortc.rtcrtpsender, "uint32_add", _origin_free_uint32_add)  # noqa: B010
    for cls, stock in _STOCK_ENCODE.items():
        setattr(cls, "encode", _exact_timestamp_encode(stock))  # noqa: B010
    logger.info("RTP sender timestamps carry frame pts (zero origin)")


def uninstall_sender_zero_timestamp_origin() -> None:
    setattr(aiortc.rtcrtpsender, "uint32_add", _STOCK_UINT32_ADD)  # noqa: B010
    for cls, stock in _STOCK_ENCODE.items():
        setattr(cls, "encode", stock)  # noqa: B010


def install_receiver_absolute_timestamps() -> None:
    """Worker side: decoded frames keep the sender's RTP timestamp as pts. Idempotent."""
    setattr(aiortc.rtcrtpreceiver, "TimestampMapper", AbsoluteTimestampMapper)  # noqa: B010
    logger.info("RTP receiver keeps absolute timestamps")


def uninstall_receiver_absolute_timestamps() -> None:
    setattr(aiortc.rtcrtpreceiver, "TimestampMapper", _STOCK_TIMESTAMP_MAPPER)  # noqa: B010
