"""Keyframe detection on depayloaded VP8 / H264 frame data (what aiortc hands its decoder)."""

from __future__ import annotations

_VP8_START_CODE = b"\x9d\x01\x2a"
_ANNEX_B_START = b"\x00\x00\x01"
_H264_NAL_IDR = 5


def is_vp8_keyframe(data: bytes) -> bool:
    """RFC 6386 9.1: frame tag bit 0 is 0 for a key frame, which carries a start code at 3..5."""
    return len(data) >= 6 and data[0] & 0x01 == 0 and data[3:6] == _VP8_START_CODE


def vp8_keyframe_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) a VP8 key frame declares (RFC 6386 9.1: 14 bits each, little-endian,
    after the start code), read before anything is decoded; None for other frames."""
    if not is_vp8_keyframe(data) or len(data) < 10:
        return None
    width = int.from_bytes(data[6:8], "little") & 0x3FFF
    height = int.from_bytes(data[8:10], "little") & 0x3FFF
    return width, height


def is_h264_keyframe(data: bytes) -> bool:
    """True if the Annex-B access unit contains an IDR slice (SPS/PPS alone do not decode)."""
    pos = data.find(_ANNEX_B_START)
    while pos != -1 and pos + 3 < len(data):
        if data[pos + 3] & 0x1F == _H264_NAL_IDR:
            return True
        # Emulation prevention guarantees no start code inside a NAL unit, so scanning is exact.
        pos = data.find(_ANNEX_B_START, pos + 3)
    return False


def is_keyframe(data: bytes) -> bool:
    """Keyframe test for depayloaded VP8 or H264 data; the codec is recognised from the bytes.

    The VP8 test goes first and is unambiguous: in H264, bytes 3..5 of a 3-byte start code
    would be a NAL header of 0x9d, whose forbidden_zero_bit is set. A VP8 inter frame starts with
    an odd byte, so it never looks like an Annex-B start code.
    """
    if is_vp8_keyframe(data):
        return True
    annex_b = data.startswith(_ANNEX_B_START) or data.startswith(b"\x00" + _ANNEX_B_START)
    return annex_b and is_h264_keyframe(data)
