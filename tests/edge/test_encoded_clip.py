"""A clip encoded once for replay: one packet per frame, keyframes where asked, decodable
back to the clip's frames; cached by content and parameters, re-encoded when the cache is
damaged; bad input named."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import av
import pytest

from edge_agent.encoded_clip import Encoding, encode_clip, load_or_encode
from mobieye.errors import MobiEyeError


def decoded_sizes(packets: tuple[bytes, ...], codec: str) -> list[tuple[int, int]]:
    dec = av.CodecContext.create("libvpx" if codec == "vp8" else "h264", "r")
    out = []
    for i, data in enumerate(packets):
        packet = av.Packet(data)
        packet.pts, packet.time_base = i, Fraction(1, 30)
        out += [(f.width, f.height) for f in dec.decode(packet)]  # type: ignore[attr-defined]
    return out


@pytest.mark.parametrize("codec", ["vp8", "h264"])
def test_every_frame_one_packet_with_keyframes_every_gop(pedestrian_clip: Path, codec: str) -> None:
    clip = encode_clip(pedestrian_clip, Encoding(codec, width=320, gop=15, max_frames=60))  # type: ignore[arg-type]
    assert len(clip) == 60 and (clip.width, clip.height) == (320, 240)
    assert clip.fps == pytest.approx(25.0)
    assert [i for i, k in enumerate(clip.keyframes) if k] == [0, 15, 30, 45]
    assert clip.next_keyframe(16) == 30 and clip.next_keyframe(50) == 0  # wraps round
    assert clip.next_keyframe(30) == 30
    # A receiver decodes every packet to a frame of the clip's size.
    assert decoded_sizes(clip.packets, codec) == [(320, 240)] * 60
    kbps = sum(map(len, clip.packets)) * 8 / (60 / 25) / 1000
    assert 50 < kbps < 1500, kbps  # near the level-0 rate, not raw


def test_cached_by_content_and_parameters(
    pedestrian_clip: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = load_or_encode(pedestrian_clip, Encoding(width=320, max_frames=20), tmp_path)
    cached = sorted((tmp_path / "replay").iterdir())
    assert [p.suffix for p in cached] == [".bin", ".json"]
    again = load_or_encode(pedestrian_clip, Encoding(width=320, max_frames=20), tmp_path)
    assert again == first  # read back whole
    other = load_or_encode(pedestrian_clip, Encoding(width=160, max_frames=20), tmp_path)
    assert other.width == 160 and len(list((tmp_path / "replay").iterdir())) == 4
    cached[1].write_text('{"version": 1, "sizes": [1], "keyframes": [true]}')  # damaged
    with caplog.at_level(logging.WARNING):
        healed = load_or_encode(pedestrian_clip, Encoding(width=320, max_frames=20), tmp_path)
    assert healed == first and "unreadable" in caplog.text


def test_bad_input_is_named(tmp_path: Path, pedestrian_clip: Path) -> None:
    with pytest.raises(MobiEyeError, match="not a file"):
        load_or_encode(tmp_path / "missing.mp4", cache_dir=tmp_path)
    with pytest.raises(MobiEyeError, match="codec must be one of vp8, h264"):
        load_or_encode(pedestrian_clip, Encoding("av1"), tmp_path)  # type: ignore[arg-type]
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all")
    with pytest.raises(MobiEyeError, match="cannot open replay clip"):
        load_or_encode(junk, cache_dir=tmp_path)
