"""Watchers of a live stream: a browser over WebRTC (``POST /view``) or MJPEG (the fallback).

A viewer is a :class:`~cloud_worker.session.StreamTap`: it gets every decoded frame and result
and holds only bounded state (latest-frame slot, capped data-channel buffer), so a slow viewer
loses frames and never slows the stream. WebRTC viewers get the frames re-encoded with the edge's
pts as RTP timestamp (the worker's sender zero-origin patch) and every Result on their data
channel: a page matches ``Result.pts % 2**32`` to a frame's ``rtpTimestamp`` (90 kHz clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import Counter, deque
from collections.abc import AsyncGenerator
from typing import Any, Literal

import cv2
from aiortc import MediaStreamTrack, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import VIDEO_TIME_BASE, MediaStreamError
from av import VideoFrame
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from cloud_worker.frames import frame_array
from cloud_worker.session import StreamSession
from mobieye.annotate import draw_result
from mobieye.config import Settings
from mobieye.messages import Result, Welcome, encode
from mobieye.slot import LatestSlot, SlotClosed
from mobieye.webrtc import filter_sdp_candidates, rtc_configuration
from mobieye.webrtc.turn import own_servers

log = logging.getLogger(__name__)

MAX_VIEWERS_PER_STREAM = 4  # each WebRTC viewer costs a video encoder on the worker
CONNECT_TIMEOUT_S = 30.0  # a viewer that never connects gives its place back
MAX_CHANNEL_BUFFER = 256 * 1024  # bytes queued on a viewer's data channel; beyond: drop results
MJPEG_INTERVAL_S = 0.1  # at most ~10 fps
MJPEG_PENDING = 16  # frames waiting for their result (covers ~0.5 s of worker latency)
MJPEG_QUALITY = 80
MJPEG_BOUNDARY = "mobieyeframe"


def relay_copy(frame: VideoFrame) -> VideoFrame:
    """A private copy for one viewer's encoder, keeping the edge's pts on the 90 kHz clock."""
    # aiortc's encoder rescales pts in place, and the stream's thread reads the original.
    even = frame.width % 2 == 0 and frame.height % 2 == 0
    fmt = "yuv420p" if even else "rgb24"  # PyAV converts yuv420p only at even sizes
    copy = VideoFrame.from_ndarray(frame_array(frame, fmt), format=fmt)
    copy.pts = frame.pts
    copy.time_base = VIDEO_TIME_BASE
    return copy


def check_view_sdp(sdp: str) -> str | None:
    """A viewer only receives: any media it would send nobody reads, and aiortc would queue it."""
    for section in "\n".join(sdp.splitlines()).split("\nm=")[1:]:  # lines as aiortc splits them
        if not section.startswith(("audio", "video")):
            continue
        lines = {line.strip() for line in section.splitlines()}
        if not lines & {"a=recvonly", "a=inactive"}:
            kind = section.split(" ", 1)[0]
            return f"a viewer's {kind} must be 'recvonly'"
    return None


class RelayTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, slot: LatestSlot[VideoFrame]) -> None:
        super().__init__()
        self._slot = slot

    async def recv(self) -> VideoFrame:
        try:
            frame = await self._slot.get()
        except SlotClosed:
            self.stop()
            raise MediaStreamError from None
        # Off the loop: a copy of a large frame for each of several viewers adds up.
        return await asyncio.to_thread(relay_copy, frame)


class _Viewer:
    kind: Literal["webrtc", "mjpeg"]

    def __init__(self, hub: ViewerHub, session: StreamSession) -> None:
        self.hub = hub
        self.session = session
        self.viewer_id = f"{self.kind}-{next(hub.ids)}"
        self.started_s = time.monotonic()
        self.results_sent = 0
        self.results_dropped = 0
        self.closed = False

    slot: LatestSlot[Any]  # the viewer's frames: taken (sent) or dropped

    def summary(self) -> dict[str, object]:
        dropped = self.slot.dropped
        sent = self.slot.put_count - dropped - len(self.slot)
        return {
            "id": self.viewer_id, "kind": self.kind, "stream_id": self.session.stream_id,
            "seconds": round(time.monotonic() - self.started_s, 1),
            "frames_sent": sent, "frames_dropped": dropped,
            "results_sent": self.results_sent, "results_dropped": self.results_dropped,
        }  # fmt: skip


class WebRtcViewer(_Viewer):
    kind = "webrtc"

    def __init__(self, hub: ViewerHub, session: StreamSession, pc: RTCPeerConnection) -> None:
        super().__init__(hub, session)
        self.pc = pc
        self.slot: LatestSlot[VideoFrame] = LatestSlot(1)
        self.track = RelayTrack(self.slot)
        self.channel: RTCDataChannel | None = None
        self._closing: asyncio.Task[None] | None = None
        self._expiry = asyncio.get_running_loop().call_later(CONNECT_TIMEOUT_S, self._expire)
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_state)

    def on_frame(self, frame: VideoFrame) -> None:
        self.slot.put(frame)

    def on_result(self, result: Result, text: str) -> None:
        channel = self.channel
        if channel is None or channel.readyState != "open":
            return
        if channel.bufferedAmount > MAX_CHANNEL_BUFFER:
            self.results_dropped += 1  # the viewer can't keep up: newer results matter more
            return
        channel.send(text)
        self.results_sent += 1

    def on_stream_end(self) -> None:
        self.close_soon()

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        self.channel = channel

        s = self.session
        hello = encode(
            Welcome(worker_id=s.worker_id, model=s.processor.model, stream_id=s.stream_id)
        )
        if channel.readyState == "open":
            channel.send(hello)
        else:
            channel.on("open", lambda: channel.send(hello))

    def _on_state(self) -> None:
        state = self.pc.connectionState
        log.info("viewer %s of %s: connection %s", self.viewer_id, self.session.stream_id, state)
        if state == "connected":
            self._expiry.cancel()
        elif state in ("failed", "closed"):
            self.close_soon()

    def _expire(self) -> None:
        if self.pc.connectionState != "connected":
            log.warning("viewer %s: not connected after %.0f s", self.viewer_id, CONNECT_TIMEOUT_S)
            self.close_soon()

    def close_soon(self) -> None:
        if self._closing is None:
            self._closing = asyncio.ensure_future(self.close())

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._expiry.cancel()
        self.slot.close()
        self.hub.forget(self)
        await self.pc.close()


class MjpegViewer(_Viewer):
    """Frames that got their result, boxes drawn, at most ~10 fps, as JPEG parts."""

    kind = "mjpeg"

    def __init__(self, hub: ViewerHub, session: StreamSession) -> None:
        super().__init__(hub, session)
        self._pending: deque[VideoFrame] = deque(maxlen=MJPEG_PENDING)
        self._last_s = -MJPEG_INTERVAL_S
        # Two, not one: the part being encoded and the next; a slow client drops the oldest.
        self.slot: LatestSlot[tuple[VideoFrame, Result]] = LatestSlot(2)

    def on_frame(self, frame: VideoFrame) -> None:
        if time.monotonic() - self._last_s >= MJPEG_INTERVAL_S:
            self._pending.append(frame)

    def on_result(self, result: Result, text: str) -> None:
        # Results come in pts order; older frames without one were dropped by the stream.
        while self._pending and (self._pending[0].pts or 0) < result.pts:
            self._pending.popleft()
        if self._pending and self._pending[0].pts == result.pts:
            self.slot.put((self._pending.popleft(), result))
            self._pending.clear()
            self._last_s = time.monotonic()

    def on_stream_end(self) -> None:
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.slot.close()
            self._pending.clear()
            self.hub.forget(self)

    async def parts(self) -> AsyncGenerator[bytes, None]:
        while True:
            try:
                frame, result = await self.slot.get()
            except SlotClosed:
                return
            jpeg = await asyncio.to_thread(render_jpeg, frame, result)
            head = f"--{MJPEG_BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
            yield f"{head}Content-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg + b"\r\n"
            self.results_sent += 1


def render_jpeg(frame: VideoFrame, result: Result) -> bytes:
    image = draw_result(frame_array(frame, "bgr24"), result)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, MJPEG_QUALITY])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return bytes(data)


class MjpegResponse(StreamingResponse):
    """Streams a viewer's parts until the stream ends or the client goes away."""

    def __init__(self, viewer: MjpegViewer) -> None:
        self.viewer = viewer
        self._parts = viewer.parts()
        media = f"multipart/x-mixed-replace; boundary={MJPEG_BOUNDARY}"
        super().__init__(self._parts, media_type=media, headers={"Cache-Control": "no-store"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # uvicorn's send() returns quietly once the client has gone: watch receive() for the
        # disconnect ourselves, or the viewer would hold its place until the stream ends.
        streaming = asyncio.ensure_future(self.stream_response(send))
        watching = asyncio.ensure_future(self.listen_for_disconnect(receive))
        try:
            await asyncio.wait({streaming, watching}, return_when=asyncio.FIRST_COMPLETED)
            if streaming.done() and (exc := streaming.exception()) is not None:
                log.warning("mjpeg viewer %s failed: %r", self.viewer.viewer_id, exc)
        finally:
            self.viewer.close()
            for task in (streaming, watching):
                task.cancel()
            await asyncio.gather(streaming, watching, return_exceptions=True)
            await self._parts.aclose()


class ViewerHub:
    """Every viewer of every stream on this worker."""

    def __init__(self, settings: Settings, limit: int = MAX_VIEWERS_PER_STREAM) -> None:
        self.settings = settings
        self.limit = limit
        self.ids = itertools.count(1)
        self.viewers: dict[str, WebRtcViewer | MjpegViewer] = {}

    def refusal(self, session: StreamSession) -> str | None:
        """Why the stream takes no more viewers, or None."""
        if session.pc.connectionState in ("failed", "closed"):
            return f"stream {session.stream_id!r} is ending"  # its viewers are being closed
        if len(session.taps) >= self.limit:
            return f"stream {session.stream_id!r} has its {self.limit} viewers: try again later"
        return None

    def _add(self, viewer: WebRtcViewer | MjpegViewer) -> None:
        self.viewers[viewer.viewer_id] = viewer
        viewer.session.taps.append(viewer)
        log.info("viewer %s watches %s", viewer.viewer_id, viewer.session.stream_id)

    def forget(self, viewer: WebRtcViewer | MjpegViewer) -> None:
        if self.viewers.pop(viewer.viewer_id, None) is not None:
            with contextlib.suppress(ValueError):
                viewer.session.taps.remove(viewer)
            log.info("viewer %s left: %s", viewer.viewer_id, viewer.summary())

    async def open_webrtc(self, session: StreamSession, sdp: str) -> RTCSessionDescription:
        """Answer a viewer's offer; aiortc's errors on a bad SDP propagate (the viewer is gone)."""
        sdp = filter_sdp_candidates(sdp, self.settings.webrtc.loopback_only)
        w = self.settings.webrtc
        pc = RTCPeerConnection(rtc_configuration(own_servers(w), w.ice_transport_policy))
        viewer = WebRtcViewer(self, session, pc)
        self._add(viewer)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            pc.addTrack(viewer.track)
            await pc.setLocalDescription(await pc.createAnswer())
        except BaseException:
            await viewer.close()
            raise
        answer: RTCSessionDescription = pc.localDescription
        return answer

    def open_mjpeg(self, session: StreamSession) -> MjpegResponse:
        viewer = MjpegViewer(self, session)
        self._add(viewer)
        return MjpegResponse(viewer)

    def summary(self) -> dict[str, object]:
        per_stream = Counter(v.session.stream_id for v in self.viewers.values())
        viewers = [v.summary() for v in self.viewers.values()]
        return {"count": len(viewers), "per_stream": dict(per_stream), "viewers": viewers}

    async def close(self) -> None:
        for viewer in list(self.viewers.values()):
            if isinstance(viewer, WebRtcViewer):
                await viewer.close()
            else:
                viewer.close()
