"""Keyframe stills: the edge-first uplink's frames, one compressed image per data-channel message.

In ``edge.uplink: keyframes`` mode the edge tracks every frame itself and sends the worker only
the frames it needs detected, each as one binary data-channel message::

    b"MES1" | header length (2 bytes, big-endian) | header (JSON, :class:`StillHeader`) | image

The image is a JPEG or WebP of the frame (possibly downscaled); the worker answers with an
ordinary :class:`~mobieye.messages.Result` for ``seq``, boxes normalised to the image, so they
apply to the full frame as well. Both sides use these functions: the edge to pack, the worker
to unpack, with every size checked before anything is decoded (a hostile peer's 50 KB file can
claim 60000x60000 pixels).
"""

from __future__ import annotations

import io
import json
import struct
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mobieye.errors import MessageError, validation_problems

MAGIC = b"MES1"
# SCTP peers that advertise no a=max-message-size accept 64 KiB: a still fits one message.
MAX_STILL_BYTES = 64 * 1024 - 1024
MAX_HEADER_BYTES = 1024
StillFormat = Literal["jpeg", "webp"]
_PIL_FORMATS = {"JPEG": "jpeg", "WEBP": "webp"}
_EXT = {"jpeg": ".jpg", "webp": ".webp"}
_QUALITY_FLAG = {"jpeg": cv2.IMWRITE_JPEG_QUALITY, "webp": cv2.IMWRITE_WEBP_QUALITY}

Bgr = npt.NDArray[np.uint8]


class StillHeader(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)

    seq: int = Field(ge=0)
    format: StillFormat
    width: int = Field(ge=1, le=16384)  # the image's, as encoded
    height: int = Field(ge=1, le=16384)
    quality: int = Field(default=0, ge=0, le=100)
    model: str | None = Field(default=None, max_length=256)  # the edge controller's choice


def is_still(raw: str | bytes) -> bool:
    return isinstance(raw, bytes) and raw[:4] == MAGIC


def pack_still(header: StillHeader, image: bytes) -> bytes:
    head = header.model_dump_json(exclude_none=True).encode()
    return MAGIC + struct.pack(">H", len(head)) + head + image


def unpack_still(raw: bytes, max_bytes: int = MAX_STILL_BYTES) -> tuple[StillHeader, bytes]:
    """The header and image bytes of one still message; MessageError saying what is wrong."""
    if len(raw) > max_bytes:
        raise MessageError(f"still of {len(raw)} bytes exceeds {max_bytes}")
    if raw[:4] != MAGIC or len(raw) < 6:
        raise MessageError("not a still (binary messages start with b'MES1')")
    (size,) = struct.unpack(">H", raw[4:6])
    if size > MAX_HEADER_BYTES or 6 + size > len(raw):
        raise MessageError(f"still header of {size} bytes is longer than allowed or than the "
                           "message")  # fmt: skip
    try:
        header = StillHeader.model_validate(json.loads(raw[6 : 6 + size]))
    except (ValueError, ValidationError) as exc:
        detail = validation_problems(exc)[0] if isinstance(exc, ValidationError) else "not JSON"
        raise MessageError(f"bad still header: {detail}") from exc
    image = raw[6 + size :]
    if not image:
        raise MessageError("still without an image")
    return header, image


def decode_still(header: StillHeader, image: bytes, max_pixels: int) -> Bgr:
    """The still as a BGR array. The file's own header is read first (PIL reads only that):
    its format and size must be the ones the still's header claims, within ``max_pixels``."""
    if header.width * header.height > max_pixels:
        raise MessageError(f"still of {header.width}x{header.height} exceeds {max_pixels} pixels")
    try:
        with Image.open(io.BytesIO(image)) as probe:
            fmt, size = _PIL_FORMATS.get(probe.format or ""), probe.size
    except Exception as exc:  # PIL raises assorted errors on garbage
        raise MessageError(f"still is not an image PIL can read ({type(exc).__name__})") from exc
    if fmt != header.format:
        raise MessageError(f"still claims {header.format} but is {fmt or 'another format'}")
    if size != (header.width, header.height):
        raise MessageError(f"still claims {header.width}x{header.height} but is "
                           f"{size[0]}x{size[1]}")  # fmt: skip
    array = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR)
    if array is None or array.shape[:2] != (header.height, header.width):
        raise MessageError("still does not decode (truncated or corrupt)")
    return array.astype(np.uint8, copy=False)


def encode_still(bgr: Bgr, fmt: StillFormat, quality: int, max_width: int | None = None) -> bytes:
    """The frame compressed, downscaled first to at most ``max_width`` wide (area filter)."""
    h, w = bgr.shape[:2]
    if max_width is not None and w > max_width:
        scale = max_width / w
        size = (max_width, max(1, round(h * scale)))
        bgr = np.asarray(cv2.resize(bgr, size, interpolation=cv2.INTER_AREA), np.uint8)
    ok, buf = cv2.imencode(_EXT[fmt], bgr, [_QUALITY_FLAG[fmt], int(quality)])
    if not ok:
        raise ValueError(f"could not encode a {fmt} still")
    return buf.tobytes()


def still_size(data: bytes) -> tuple[int, int]:
    """(width, height) of an encoded still, from its own header."""
    with Image.open(io.BytesIO(data)) as probe:
        return probe.size
