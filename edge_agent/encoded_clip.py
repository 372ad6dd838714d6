"""A clip encoded once (VP8 or H264), for load that costs almost nothing per stream: replay
senders (edge_agent/replay.py) hand its packets to aiortc instead of encoding frames.

Encoded with the edge's own encoder settings (aiortc's: realtime, CBR at the level-0 bitrate)
except the keyframe interval: a replayed stream cannot answer a keyframe request, so the clip
carries one every ``gop`` frames and a receiver that lost a frame recovers within it.
Cached by the clip's content and the parameters (``CACHE_DIR/replay``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, cast

import av
from av.packet import Packet
from av.video.codeccontext import VideoCodecContext

from mobieye import runtime
from mobieye.errors import MobiEyeError
from mobieye.models.digest import sha256_of

log = logging.getLogger(__name__)

Codec = Literal["vp8", "h264"]
_ENCODERS: dict[str, str] = {"vp8": "libvpx", "h264": "libx264"}
DEFAULT_GOP = 30  # frames between keyframes: ~1 s to recover from a loss at 30 fps
DEFAULT_BITRATE_KBPS = 350  # the controller's level 0 (mobieye/controller.py)
MAX_FRAMES = 3000  # a replay loops; more than 100 s of frames only costs memory
FORMAT_VERSION = 1


@dataclass(frozen=True)
class EncodedClip:
    codec: Codec
    fps: float
    width: int
    height: int
    packets: tuple[bytes, ...]  # one per frame, in order
    keyframes: tuple[bool, ...]

    def __len__(self) -> int:
        return len(self.packets)

    def next_keyframe(self, index: int) -> int:
        """The first keyframe at or after ``index`` (wrapping round): where a new receiver
        can start decoding."""
        n = len(self.packets)
        for k in range(n):
            i = (index + k) % n
            if self.keyframes[i]:
                return i
        raise MobiEyeError("encoded clip holds no keyframe")  # encode_clip makes the first one


@dataclass(frozen=True)
class Encoding:
    """How a clip is encoded for replay (the cache key, with the clip's content)."""

    codec: Codec = "vp8"
    width: int = 640  # at most: a narrower clip keeps its size
    gop: int = DEFAULT_GOP
    bitrate_kbps: int = DEFAULT_BITRATE_KBPS
    max_frames: int = MAX_FRAMES

    def key(self, video: Path) -> str:
        spec = f"{FORMAT_VERSION}|{sha256_of(video)}|{self}"
        return hashlib.sha256(spec.encode()).hexdigest()[:20]


def load_or_encode(
    video: Path, how: Encoding = Encoding(), cache_dir: Path | None = None
) -> EncodedClip:
    """The clip encoded so: from the cache, else encoded (and cached)."""
    if how.codec not in _ENCODERS:
        raise MobiEyeError(f"replay codec must be one of {', '.join(_ENCODERS)}, not {how.codec!r}")
    if not video.is_file():
        raise MobiEyeError(f"replay clip {video} is not a file")
    root = (cache_dir or runtime.CACHE_DIR) / "replay"
    key = how.key(video)
    index_path, data_path = root / f"{key}.json", root / f"{key}.bin"
    if index_path.is_file() and data_path.is_file():
        try:
            return _read(index_path, data_path)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("replay cache %s unreadable (%s): encoding again", index_path, exc)
    clip = encode_clip(video, how)
    _write(clip, index_path, data_path)
    return clip


def encode_clip(video: Path, how: Encoding = Encoding()) -> EncodedClip:
    """Decode ``video`` and encode up to ``how.max_frames`` of it, scaled to ``how.width``
    (even sizes, aspect kept), one packet per frame."""
    codec, width, gop, bitrate_kbps = how.codec, how.width, how.gop, how.bitrate_kbps
    try:
        container = av.open(str(video))
    except av.FFmpegError as exc:
        raise MobiEyeError(f"cannot open replay clip {video}: {exc}") from exc
    with container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 25)
        src_w, src_h = stream.codec_context.width, stream.codec_context.height
        w = min(width, src_w) // 2 * 2
        h = round(src_h * w / src_w) // 2 * 2
        enc = cast(VideoCodecContext, av.CodecContext.create(_ENCODERS[codec], "w"))
        enc.width, enc.height, enc.pix_fmt = w, h, "yuv420p"
        enc.time_base = Fraction(1, round(fps))
        enc.framerate = Fraction(round(fps), 1)
        enc.bit_rate = bitrate_kbps * 1000
        enc.gop_size = gop
        enc.options = _options(codec, bitrate_kbps)
        packets: list[bytes] = []
        keyframes: list[bool] = []
        for i, frame in enumerate(container.decode(stream)):
            if i >= how.max_frames:
                break
            out = frame.reformat(width=w, height=h, format="yuv420p")
            out.pts, out.time_base = i, enc.time_base
            # A decoded frame keeps the source's picture type, and an encoder makes an I frame
            # wherever it says I: the source's keyframes, not ours, would set the interval.
            out.pict_type = av.video.frame.PictureType.NONE
            _collect(enc.encode(out), packets, keyframes)
        _collect(enc.encode(None), packets, keyframes)
    if not packets or not keyframes[0]:
        raise MobiEyeError(f"replay clip {video}: the encoder produced no keyframe first")
    log.info("encoded %s: %d frames %dx%d %s, %.0f KB, a keyframe every %d", video.name,
             len(packets), w, h, codec, sum(map(len, packets)) / 1000, gop)  # fmt: skip
    return EncodedClip(codec, fps, w, h, tuple(packets), tuple(keyframes))


def _options(codec: Codec, kbps: int) -> dict[str, str]:
    if codec == "vp8":  # aiortc's Vp8Encoder settings
        rate = str(kbps * 1000)
        return {"deadline": "realtime", "cpu-used": "-6", "lag-in-frames": "0",
                "bufsize": rate, "minrate": rate, "maxrate": rate, "partitions": "0",
                "static-thresh": "1", "undershoot-pct": "100", "overshoot-pct": "15"}  # fmt: skip
    # aiortc's H264Encoder: baseline profile, zero latency, one slice per frame.
    return {"profile": "baseline", "preset": "ultrafast", "tune": "zerolatency", "level": "31"}


def _collect(out: list[Packet[Any]], packets: list[bytes], keyframes: list[bool]) -> None:
    for p in out:
        packets.append(bytes(p))
        keyframes.append(bool(p.is_keyframe))


def _write(clip: EncodedClip, index_path: Path, data_path: Path) -> None:
    index_path.parent.mkdir(parents=True, exist_ok=True)
    index = {
        "version": FORMAT_VERSION,
        "codec": clip.codec,
        "fps": clip.fps,
        "width": clip.width,
        "height": clip.height,
        "sizes": [len(p) for p in clip.packets],
        "keyframes": list(clip.keyframes),
    }
    # Written aside and renamed: two benches encoding at once never read half a file.
    for path, data in (
        (data_path, b"".join(clip.packets)),
        (index_path, json.dumps(index).encode()),
    ):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)


def _read(index_path: Path, data_path: Path) -> EncodedClip:
    index = json.loads(index_path.read_text())
    if index.get("version") != FORMAT_VERSION:
        raise ValueError(f"format {index.get('version')}, not {FORMAT_VERSION}")
    data = data_path.read_bytes()
    sizes = [int(n) for n in index["sizes"]]
    if sum(sizes) != len(data) or len(sizes) != len(index["keyframes"]):
        raise ValueError("index and data disagree")
    packets, pos = [], 0
    for n in sizes:
        packets.append(data[pos : pos + n])
        pos += n
    return EncodedClip(index["codec"], float(index["fps"]), int(index["width"]),
                       int(index["height"]), tuple(packets),
                       tuple(bool(k) for k in index["keyframes"]))  # fmt: skip
