"""Hostile clients of a worker, played by real aiortc peers and real HTTP requests: peers that
never connect, never send a frame, flood their data channel, advertise a tiny max-message-size,
stop reading, or send frames too large to take."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from av import VideoFrame


class SyntheticTrack(VideoStreamTrack):
    """Flat frames of a given size at 30 fps; ``silent`` never yields one."""

    def __init__(self, width: int = 320, height: int = 240, silent: bool = False) -> None:
        super().__init__()
        self._image = np.full((height, width, 3), 96, np.uint8)
        self._silent = silent

    async def recv(self) -> VideoFrame:
        if self._silent:
            await asyncio.Event().wait()
        pts, time_base = await self.next_timestamp()
        frame = VideoFrame.from_ndarray(self._image, format="bgr24")
        frame.pts, frame.time_base = pts, time_base
        return frame


async def offer(
    client: httpx.AsyncClient,
    track: VideoStreamTrack | None,
    stream_id: str,
    *,
    connect: bool = True,
    munge: Callable[[str], str] = lambda sdp: sdp,
) -> tuple[RTCPeerConnection, Any, httpx.Response]:
    """Offer a stream the way an edge does; ``connect=False`` walks away after the answer."""
    pc = RTCPeerConnection()
    channel = pc.createDataChannel("mobieye")
    if track is not None:
        pc.addTransceiver(track, direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    body = {"sdp": munge(pc.localDescription.sdp), "type": "offer", "stream_id": stream_id}
    response = await client.post("/offer", json=body)
    if response.status_code == 200 and connect:
        answer = response.json()
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
    elif not connect:
        await pc.close()
    return pc, channel, response


def stop_reading(pc: RTCPeerConnection) -> None:
    """Make the peer's SCTP drop every data chunk without acknowledging it: to the worker, a
    peer that stopped reading (its sends back up)."""

    async def ignore(chunk: Any) -> None:
        return None

    pc.sctp._receive_data_chunk = ignore  # type: ignore[union-attr]


async def closed_reason(
    client: httpx.AsyncClient, stream_id: str, timeout_s: float
) -> tuple[str | None, float]:
    """Wait until the worker has closed ``stream_id``; (its close reason, seconds waited)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        streams = (await client.get("/streams")).json()
        if all(s["stream_id"] != stream_id for s in streams["active"]):
            for s in reversed(streams["recent"]):
                if s["stream_id"] == stream_id:
                    return s.get("close_reason"), time.monotonic() - start
            return "gone", time.monotonic() - start
        await asyncio.sleep(0.25)
    return None, time.monotonic() - start


async def endless_chunked_post(url: str, token: str, limit: int) -> tuple[int, int]:
    """POST a chunked JSON body that never ends (up to ``limit`` bytes) and stop writing when
    the worker answers; (status, bytes written by then)."""
    u = httpx.URL(url)
    reader, writer = await asyncio.open_connection(u.host, u.port)
    head = (f"POST /offer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")  # fmt: skip
    chunk = b"10000\r\n" + b" " * 0x10000 + b"\r\n"
    written = 0

    async def write() -> None:
        nonlocal written
        writer.write(head.encode())
        while written < limit:
            writer.write(chunk)
            await writer.drain()
            written += 0x10000

    sender = asyncio.create_task(write())
    try:
        data = await asyncio.wait_for(reader.read(65536), 30)
    finally:
        sender.cancel()
        writer.close()
    return int(data.split(b" ", 2)[1]), written


async def raw_request(url: str, head: str, body: bytes = b"") -> tuple[int, str]:
    """Send bytes no well-behaved client would (a Content-Length that lies); (status, body)."""
    host, port = httpx.URL(url).host, httpx.URL(url).port
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        await writer.drain()
        # The head and the body may come in separate segments: read the head, then as many
        # body bytes as it announces (or to EOF when it announces none).
        head_bytes = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head_bytes)
        if length is not None:
            payload = await asyncio.wait_for(reader.readexactly(int(length[1])), 10)
        else:
            payload = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    status_line = head_bytes.decode("latin-1").partition("\r\n")[0]
    return int(status_line.split()[1]), payload.decode("latin-1")


def metric(text: str, name: str, **labels: str) -> float:
    """One sample from Prometheus text (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(name) and (not want or "{" + want + "}" in line):
            with contextlib.suppress(ValueError):
                return float(line.rsplit(" ", 1)[1])
    return 0.0
