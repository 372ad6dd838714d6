"""Live sources against real cameras: a one-client MJPEG server (ffmpeg) and an RTSP server
(GStreamer), killed and restarted under a running VideoSource."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_agent.sources import STOP_JOIN_S, CapturedFrame, SourceSpec, VideoSource, parse_source
from mobieye.slot import LatestSlot, SlotClosed
from tests.edge.cameras import MjpegCamera, RtspCamera, need_ffmpeg, need_rtsp_server

PASSWORD = "s3cret"


class Collector:
    """Runs a source into a slot and keeps every frame it delivers."""

    def __init__(self, source: VideoSource) -> None:
        self.source = source
        self.frames: list[CapturedFrame] = []
        self.slot: LatestSlot[CapturedFrame] = LatestSlot(256)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.source.start(asyncio.get_running_loop(), self.slot)
        self._task = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while True:
                self.frames.append(await self.slot.get())
        except SlotClosed:
            pass

    def since(self, t: float) -> int:
        return sum(f.capture_s > t for f in self.frames)

    async def resumed(self, after_s: float, frames: int, timeout_s: float) -> None:
        await self.until(lambda: self.since(after_s) >= frames, timeout_s, "getting frames again")

    async def until(self, what: Callable[[], bool], timeout_s: float, why: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not what():
            assert time.monotonic() < deadline, f"after {timeout_s} s, still not {why}"
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        await asyncio.to_thread(self.source.stop)
        self.slot.close()  # as the agent does: the thread may still be blocked in OpenCV
        if self._task is not None:
            await asyncio.wait_for(self._task, 5)


@pytest.fixture
def clip(data_dir: Path) -> Path:
    need_ffmpeg()
    return data_dir / "videos" / "TUD-Campus.mp4"  # 640x480 at 25 fps


def test_labels_never_show_a_password() -> None:
    spec = parse_source(f"rtsp://admin:{PASSWORD}@10.0.0.5:554/live?pwd={PASSWORD}&ch=1")
    assert spec.label == "url:rtsp://admin:***@10.0.0.5:554/live?pwd=***&ch=1"
    assert SourceSpec("file", "a\nb.mp4").label == "file:a\\nb.mp4"


@pytest.mark.timeout(60)
@pytest.mark.asyncio
async def test_one_client_camera_is_opened_once(clip: Path) -> None:
    with MjpegCamera(clip) as camera:
        camera.start()
        source = await asyncio.to_thread(VideoSource, parse_source(camera.url), reconnect_s=0.1)
        assert (source.width, source.height, source.fps) == (640, 480, 25)
        run = Collector(source)
        started_s = time.monotonic()
        run.start()
        await asyncio.sleep(2)
        assert camera.alive  # still serving its one client: the probe was not a connection
        await run.stop()
    assert source.reopens == 0 and camera.starts == 1
    assert len(run.frames) >= 30
    assert run.frames[0].capture_s < started_s  # the frame read at construction, not lost
    assert [f.seq for f in run.frames] == list(range(len(run.frames)))
    assert source.last_frame_s is not None and source.last_frame_s > started_s


@pytest.mark.timeout(60)
@pytest.mark.asyncio
async def test_one_client_camera_that_drops_is_reopened(
    clip: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "edge_agent.sources")
    drops = 3
    with MjpegCamera(clip) as camera:
        camera.start()
        source = await asyncio.to_thread(VideoSource, parse_source(camera.url), reconnect_s=0.1)
        run = Collector(source)
        run.start()
        for drop in range(drops):
            await asyncio.sleep(1)
            camera.kill()
            await run.until(lambda: source.reopening, 10, "reopening after the camera died")
            await asyncio.sleep(0.3)
            # The camera comes back at another size once: frames keep the first size.
            camera.size = (320, 240) if drop == 1 else None
            await asyncio.to_thread(camera.start)
            back_s = time.monotonic()
            await run.resumed(back_s, 5, 10)
            assert not source.reopening
        await run.stop()
    assert source.reopens >= drops
    assert {f.image.shape for f in run.frames} == {(480, 640, 3)}
    assert [f.seq for f in run.frames] == list(range(len(run.frames)))
    dropped = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) >= drops
    assert all(r.levelno == logging.WARNING and camera.url in r.getMessage() for r in dropped)
    assert "came back at 320x240; its frames are resized to 640x480" in caplog.text


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.asyncio
async def test_rtsp_camera_killed_and_restarted(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    need_rtsp_server()
    caplog.set_level(logging.INFO, "edge_agent.sources")
    with RtspCamera() as camera:
        camera.start()
        url = camera.url(f"viewer:{PASSWORD}")
        source = await asyncio.to_thread(VideoSource, parse_source(url), reconnect_s=0.2)
        assert (source.width, source.height) == (320, 240)
        run = Collector(source)
        run.start()
        await run.until(lambda: len(run.frames) >= 10, 10, "streaming")
        camera.kill()
        await run.until(lambda: source.reopening, 15, "reopening after the server died")
        await asyncio.sleep(1)
        await asyncio.to_thread(camera.start)
        back_s = time.monotonic()
        await run.resumed(back_s, 10, 15)
        await run.stop()
    assert source.reopens >= 1
    assert f"url:rtsp://viewer:***@127.0.0.1:{camera.port}/cam dropped" in caplog.text
    assert PASSWORD not in caplog.text + source.spec.label
    out, err = capfd.readouterr()
    assert PASSWORD not in out + err  # nor in what OpenCV and FFmpeg print themselves


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.asyncio
async def test_rtsp_camera_down_at_start_is_opened_once_up() -> None:
    need_rtsp_server()
    with RtspCamera() as camera:
        begun_s = time.monotonic()
        later = asyncio.get_running_loop().call_later(2, camera.start)
        source = await asyncio.to_thread(
            VideoSource, parse_source(camera.url()), reconnect_s=0.25, open_timeout_s=20
        )
        later.cancel()
        assert time.monotonic() - begun_s >= 2 and camera.starts == 1
        run = Collector(source)
        run.start()
        await run.until(lambda: len(run.frames) >= 10, 10, "streaming")
        await run.stop()
    assert source.reopens == 0


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.asyncio
async def test_stalled_rtsp_camera_is_reopened_and_stop_never_hangs() -> None:
    need_rtsp_server()
    with RtspCamera() as camera:
        camera.start()
        source = await asyncio.to_thread(VideoSource, parse_source(camera.url()), reconnect_s=0.2)
        run = Collector(source)
        run.start()
        await run.until(lambda: len(run.frames) >= 10, 10, "streaming")
        # Frozen, not dead: the connection stays up and no frame comes. Only the read timeout
        # can tell; then each reopen hangs in the RTSP handshake until the open timeout.
        camera.signal(signal.SIGSTOP)
        await run.until(lambda: source.reopening, 15, "reopening a stalled stream")
        stalled_s = source.last_frame_s
        await asyncio.sleep(0.5)
        t = time.monotonic()
        await run.stop()
        assert time.monotonic() - t < STOP_JOIN_S + 1
        assert source.last_frame_s == stalled_s
    # The camera is gone: the open the thread was blocked in fails, and the thread ends.
    assert await asyncio.to_thread(source.ended.wait, 15)
    assert not source.reopening
