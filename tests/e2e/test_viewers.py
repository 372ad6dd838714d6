"""Watching a live stream: a real worker process, a real edge agent streaming a real clip, and
viewers over loopback WebRTC (``POST /view``) and MJPEG (``GET /streams/{id}/mjpeg``)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiortc.rtcrtpreceiver
import cv2
import httpx
import numpy as np
import pytest
import pytest_asyncio
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

from edge_agent.agent import EdgeAgent, EdgeOutputs
from edge_agent.sources import VideoSource, parse_source
from mobieye.config import load_settings
from mobieye.messages import Result, Welcome, parse_message
from mobieye.webrtc import (
    AbsoluteTimestampMapper,
    confine_to_loopback,
    install_receiver_absolute_timestamps,
    rtc_configuration,
    uninstall_receiver_absolute_timestamps,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def viewer_webrtc() -> Iterator[None]:
    """Viewers in this process read the RTP timestamp back as pts, as a browser's page does."""
    confine_to_loopback()
    was_installed = aiortc.rtcrtpreceiver.TimestampMapper is AbsoluteTimestampMapper
    install_receiver_absolute_timestamps()
    yield
    if not was_installed:
        uninstall_receiver_absolute_timestamps()


def edge_agent(url: str, clip: Path, stream_id: str, **edge: object) -> EdgeAgent:
    # No controller: it could scale the stream down, and the MJPEG test checks the frame size.
    settings = load_settings(
        None,
        {
            "edge": {"worker_url": url, "source": str(clip), "stream_id": stream_id, **edge},
            "controller": {"enabled": False},
        },
    )
    source = VideoSource(
        parse_source(str(clip)), fps=settings.edge.fps, loop_file=settings.edge.loop
    )
    return EdgeAgent(settings, source, EdgeOutputs())


class Viewer:
    """What a browser page does: receive-only video plus a data channel it creates."""

    def __init__(self, direction: str = "recvonly") -> None:
        self.pc = RTCPeerConnection(rtc_configuration([]))
        self.pc.addTransceiver("video", direction=direction)
        self.channel = self.pc.createDataChannel("results")
        self.frames: list[VideoFrame] = []
        self.results: list[Result] = []
        self.welcome: Welcome | None = None
        self._reader: asyncio.Task[None] | None = None
        self.channel.on("message", self._on_message)
        self.pc.on("track", self._on_track)

    def _on_message(self, raw: str | bytes) -> None:
        msg = parse_message(raw)
        if isinstance(msg, Result):
            self.results.append(msg)
        elif isinstance(msg, Welcome):
            self.welcome = msg

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._reader = asyncio.ensure_future(self._read(track))

    async def _read(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                assert isinstance(frame, VideoFrame)
                self.frames.append(frame)

    async def offer(
        self, client: httpx.AsyncClient, url: str, stream_id: str | None
    ) -> httpx.Response:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        body = {"sdp": self.pc.localDescription.sdp, "type": "offer"}
        if stream_id is not None:
            body["stream_id"] = stream_id
        response = await client.post(url + "/view", json=body)
        if response.status_code == 200:
            answer = response.json()
            await self.pc.setRemoteDescription(
                RTCSessionDescription(sdp=answer["sdp"], type=answer["type"])
            )
        return response

    async def close(self) -> None:
        await self.pc.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


async def refused(
    client: httpx.AsyncClient, url: str, stream_id: str | None, direction: str = "recvonly"
) -> httpx.Response:
    viewer = Viewer(direction)
    try:
        return await viewer.offer(client, url, stream_id)
    finally:
        await viewer.close()


async def eventually(check: Callable[[], Any], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        outcome = check()
        if asyncio.iscoroutine(outcome):
            outcome = await outcome
        if outcome:
            return
        assert time.monotonic() < deadline, f"timed out waiting for {check}"
        await asyncio.sleep(0.1)


async def viewer_count(client: httpx.AsyncClient, url: str, stream_id: str) -> int:
    per_stream: dict[str, int] = (await client.get(url + "/viewers")).json()["per_stream"]
    return per_stream.get(stream_id, 0)


async def viewers_are(client: httpx.AsyncClient, url: str, stream_id: str, n: int) -> bool:
    return await viewer_count(client, url, stream_id) == n


async def stream_is_live(client: httpx.AsyncClient, url: str, stream_id: str) -> bool:
    active = (await client.get(url + "/streams")).json()["active"]
    return any(s["stream_id"] == stream_id and s["results_sent"] > 0 for s in active)


@pytest_asyncio.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False, timeout=10) as c:
        yield c


@pytest.mark.asyncio
async def test_viewer_gets_frames_stamped_with_the_pts_of_their_results(
    worker_url: str, pedestrian_clip: Path, client: httpx.AsyncClient, viewer_webrtc: None
) -> None:
    agent = edge_agent(worker_url, pedestrian_clip, "watched")
    edge = asyncio.create_task(agent.run(duration_s=None))  # the whole clip: about 7 s
    await eventually(lambda: stream_is_live(client, worker_url, "watched"))
    viewer = Viewer()
    response = await viewer.offer(client, worker_url, "watched")
    assert response.status_code == 200, response.text
    await eventually(lambda: viewer_count(client, worker_url, "watched"))
    report = await edge
    try:
        assert report["frames_captured"] >= 170
        assert len(viewer.frames) >= 50, "the viewer got the stream's video"
        assert len(viewer.results) >= 50, "and its results"
        assert viewer.welcome is not None and viewer.welcome.stream_id == "watched"
        # The page's alignment: a frame's RTP timestamp (here its pts) names its result.
        result_pts = {r.pts for r in viewer.results}
        matched = sum(f.pts in result_pts for f in viewer.frames)
        assert matched / len(viewer.frames) >= 0.8, (matched, len(viewer.frames))
        persons = sum(b.label == "person" for r in viewer.results for b in r.boxes)
        assert persons > len(viewer.results), "several people on most frames of this clip"
        assert (viewer.frames[-1].width, viewer.frames[-1].height) == (640, 480)

        # The stream ended: the worker closed its viewers.
        await eventually(lambda: viewer.pc.connectionState == "closed")
        assert await viewer_count(client, worker_url, "watched") == 0
    finally:
        await viewer.close()


@pytest.mark.asyncio
async def test_refusals_viewer_limit_mjpeg_and_leaving_viewers(
    worker_url: str, pedestrian_clip: Path, client: httpx.AsyncClient, viewer_webrtc: None
) -> None:
    view = worker_url + "/view"
    # Unknown stream: 404 with the reason, for both kinds of viewer.
    response = await refused(client, worker_url, "nobody")
    assert response.status_code == 404 and "nobody" in response.json()["error"]
    assert (await client.get(worker_url + "/streams/nobody/mjpeg")).status_code == 404
    # Malformed offers: 400 with the reason.
    garbage = await client.post(
        view, content=b"{not json", headers={"content-type": "application/json"}
    )
    assert garbage.status_code == 400 and "bad offer" in garbage.json()["error"]
    not_sdp = await client.post(view, json={"sdp": "hello", "type": "offer", "stream_id": "x"})
    assert not_sdp.status_code == 400 and "v=0" in not_sdp.json()["error"]
    no_stream = await refused(client, worker_url, None)
    assert no_stream.status_code == 400 and "stream_id" in no_stream.json()["error"]
    sending = await refused(client, worker_url, "nobody", direction="sendrecv")
    assert sending.status_code == 400 and "recvonly" in sending.json()["error"]

    agent = edge_agent(worker_url, pedestrian_clip, "limited", loop=True)
    edge = asyncio.create_task(agent.run(duration_s=25))
    viewers: list[Viewer] = []
    try:
        await eventually(lambda: stream_is_live(client, worker_url, "limited"))

        # MJPEG: JPEG parts of the stream's frame size; leaving frees the place.
        url = worker_url + "/streams/limited/mjpeg"
        async with client.stream("GET", url) as mjpeg:
            assert mjpeg.status_code == 200
            assert mjpeg.headers["content-type"].startswith("multipart/x-mixed-replace")
            boundary = mjpeg.headers["content-type"].split("boundary=")[1].encode()
            data = b""
            async for chunk in mjpeg.aiter_bytes():
                data += chunk
                if data.count(b"--" + boundary) >= 3:
                    # Leaving the loop closes the response: count while still reading.
                    assert await viewer_count(client, worker_url, "limited") == 1
                    break
        part = data.split(b"--" + boundary)[1]
        headers, jpeg = part.split(b"\r\n\r\n", 1)
        assert b"image/jpeg" in headers
        image = cv2.imdecode(np.frombuffer(jpeg.rstrip(b"\r\n"), np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape == (480, 640, 3)
        await eventually(lambda: viewers_are(client, worker_url, "limited", 0))

        # Four viewers connect; a fifth (WebRTC or MJPEG) is refused with 503.
        for _ in range(4):
            viewer = Viewer()
            viewers.append(viewer)
            assert (await viewer.offer(client, worker_url, "limited")).status_code == 200
        await eventually(lambda: all(v.pc.connectionState == "connected" for v in viewers))
        fifth = await refused(client, worker_url, "limited")
        assert fifth.status_code == 503 and "viewers" in fifth.json()["error"]
        assert (await client.get(url)).status_code == 503
        await eventually(lambda: all(v.frames and v.results for v in viewers))

        # Viewers that close are removed.
        for viewer in viewers[:2]:
            await viewer.close()
        await eventually(lambda: viewers_are(client, worker_url, "limited", 2))
        for viewer in viewers[2:]:
            await viewer.close()
        await eventually(lambda: viewers_are(client, worker_url, "limited", 0))
        active = (await client.get(worker_url + "/streams")).json()["active"]
        assert next(s for s in active if s["stream_id"] == "limited")["viewers"] == 0
    finally:
        for viewer in viewers:
            await viewer.close()
        edge.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await edge
