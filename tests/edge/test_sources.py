"""Sources: files paced in real time, and a network camera that drops and is reopened."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from edge_agent.sources import CapturedFrame, VideoSource, parse_source
from mobieye.errors import SourceError
from mobieye.slot import LatestSlot, SlotClosed
from tests.edge.phone_camera import PhoneCamera


async def collect(source: VideoSource, seconds: float) -> list[CapturedFrame]:
    slot: LatestSlot[CapturedFrame] = LatestSlot(64)
    source.start(asyncio.get_running_loop(), slot)
    frames: list[CapturedFrame] = []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            try:
                frames.append(await asyncio.wait_for(slot.get(), deadline - time.monotonic()))
            except (TimeoutError, SlotClosed):
                break
    finally:
        source.stop()
    return frames


@pytest.mark.asyncio
async def test_file_is_paced_in_real_time_with_seq_and_capture_time(data_dir: Path) -> None:
    clip = data_dir / "videos" / "TUD-Campus.mp4"  # 71 frames at 25 fps
    source = VideoSource(parse_source(str(clip)), fps=50)
    frames = await collect(source, 10)
    assert [f.seq for f in frames] == list(range(71))
    span = frames[-1].capture_s - frames[0].capture_s
    assert 70 / 50 * 0.8 < span < 70 / 50 * 1.5  # paced at --fps, not as fast as it decodes
    assert source.ended.is_set()


@pytest.mark.asyncio
async def test_looped_file_keeps_going(data_dir: Path) -> None:
    clip = data_dir / "videos" / "TUD-Campus.mp4"
    source = VideoSource(parse_source(str(clip)), fps=200, loop_file=True)
    frames = await collect(source, 1.2)
    assert len(frames) > 100  # more than the clip holds


@pytest.mark.asyncio
async def test_network_camera_that_drops_is_reopened(data_dir: Path) -> None:
    with PhoneCamera(data_dir / "videos" / "TUD-Campus.mp4", frames_per_connection=20) as phone:
        source = VideoSource(parse_source(phone.url), reconnect_s=0.1)
        frames = await collect(source, 4)
    assert source.reopens >= 1 and phone.connections >= 3
    assert len(frames) >= 40  # frames kept coming across reconnects
    assert [f.seq for f in frames] == list(range(len(frames)))
    assert frames[0].image.shape == (480, 640, 3)


def test_bad_sources_are_named(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        parse_source(str(tmp_path / "nope.mp4"))
    with pytest.raises(SourceError, match="not a file"):
        parse_source(str(tmp_path))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"junk" * 100)
    with pytest.raises(SourceError, match=r"junk\.mp4"):
        VideoSource(parse_source(str(junk)))
    with pytest.raises(SourceError, match=r"127\.0\.0\.1:9.*gave up after 0\.5 s"):
        VideoSource(parse_source("http://127.0.0.1:9/video.mjpg"), open_timeout_s=0.5)
