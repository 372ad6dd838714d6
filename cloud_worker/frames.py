"""Decoded frames as arrays, safe to convert from several threads at once.

PyAV caches one reformatter (an FFmpeg SwsContext) on each frame and runs it without the GIL:
two threads converting the same frame at once (the stream's thread on a keyframe, a viewer's
JPEG or encoder copy in another) race inside FFmpeg and the worker dies of a segmentation
fault, every stream with it. Every conversion here uses a reformatter of its own; reading the
frame's planes is read-only and safe.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from av import VideoFrame
from av.video.reformatter import VideoReformatter

Array = npt.NDArray[np.uint8]
_PLANAR_YUV = ("yuv420p", "yuvj420p", "nv12")


def frame_array(frame: VideoFrame, fmt: str) -> Array:
    """The frame in ``fmt`` (``bgr24``, ``rgb24``, ``yuv420p``...), converted privately."""
    if frame.format.name != fmt:
        frame = VideoReformatter().reformat(frame, format=fmt)
    return np.asarray(frame.to_ndarray(), np.uint8)


def luma(frame: VideoFrame) -> Array:
    """The Y plane of a decoded frame: greyscale for free, no colour conversion."""
    if frame.format.name not in _PLANAR_YUV:
        return frame_array(frame, "gray")
    plane = frame.planes[0]
    rows = np.frombuffer(memoryview(plane), np.uint8).reshape(plane.height, plane.line_size)
    return np.ascontiguousarray(rows[:, : plane.width])
