"""One WebRTC session from the edge to one worker: offer, answer, data channel, health.

The edge agent keeps its capture running across sessions; when a worker dies it opens a new
session to another one (failover) with a fresh track that reads the same frame slot. When a
worker drains, the edge opens the next session first, its track paused, and switches once its
data channel is open (make before break).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription

from edge_agent.replay import ReplayTrack
from edge_agent.track import CaptureTrack
from mobieye.clock import FrameClock
from mobieye.config import Settings
from mobieye.errors import SignallingError
from mobieye.fleet.access import WorkerAccess
from mobieye.ids import is_valid_id
from mobieye.webrtc import (
    confine_to_loopback,
    install_bitrate_hysteresis,
    install_sender_zero_timestamp_origin,
    prefer_codec,
    rtc_configuration,
    set_bitrate_limits,
    uninstall_bitrate_hysteresis,
)
from mobieye.webrtc.channel import PeerChannel
from mobieye.webrtc.ice import IceServerLike
from mobieye.webrtc.sctp import set_sctp_rto_min

log = logging.getLogger(__name__)

HELD_MESSAGES = 32


class WorkerRefused(SignallingError):
    """The worker answered but won't take the stream (at capacity, loading, bad offer)."""


MAX_ANSWER_BYTES = 256 * 1024  # an SDP answer is a few KiB; a worker can't make us buffer more


async def post_offer(
    url: str, payload: dict[str, Any], access: WorkerAccess, timeout_s: float = 10.0
) -> dict[str, Any]:
    """Signal through the worker's POST /offer; errors say which worker and why."""
    endpoint = url.rstrip("/") + "/offer"
    try:
        async with (
            access.client(timeout_s) as client,
            client.stream("POST", endpoint, json=payload) as response,
        ):
            access.check(response)
            body = b""
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_ANSWER_BYTES:
                    raise WorkerRefused(f"worker {endpoint} answered over {MAX_ANSWER_BYTES} bytes")
    except httpx.HTTPError as exc:
        raise SignallingError(f"cannot reach worker at {endpoint}: {exc!r}") from exc
    response = httpx.Response(response.status_code, content=body, headers=response.headers)
    if response.status_code != 200:
        try:
            reason = response.json().get("error", response.text)
        except (ValueError, AttributeError):
            reason = response.text
        raise WorkerRefused(
            f"worker {endpoint} refused the stream ({response.status_code}): {str(reason)[:300]}"
        )
    try:
        answer = response.json()
        str(answer["sdp"]), str(answer["type"])
    except (ValueError, KeyError, TypeError) as exc:
        raise WorkerRefused(f"worker {endpoint} sent no usable answer: {exc!r}") from exc
    if not isinstance(answer, dict):
        raise WorkerRefused(f"worker {endpoint} sent no usable answer")
    return answer


def _id_or_none(value: object) -> str | None:
    """An id from the worker's answer, only if it is one (it reaches logs and reports)."""
    return value if isinstance(value, str) and is_valid_id(value) else None


@dataclass
class Connection:
    url: str
    pc: RTCPeerConnection
    channel: RTCDataChannel
    stream_id: str | None = None
    worker_id: str | None = None
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    lost_reason: str = ""
    track: CaptureTrack | ReplayTrack | None = None
    opened: asyncio.Event = field(default_factory=asyncio.Event)  # its data channel is open
    # Messages that came before it became the stream's connection (made ahead of a move).
    held: deque[str | bytes] = field(default_factory=lambda: deque(maxlen=HELD_MESSAGES))
    peer: PeerChannel = field(init=False)

    def __post_init__(self) -> None:
        # A worker that stops reading or can't take our messages is as good as lost.
        self.peer = PeerChannel(
            self.channel, lambda why, detail: self.mark_lost(f"{why}: {detail}")
        )

    def mark_lost(self, reason: str) -> None:
        if not self.lost.is_set():
            self.lost_reason = reason
            self.lost.set()

    def send(self, text: str | bytes) -> bool:
        return self.peer.send(text)

    async def bytes_sent(self) -> int:
        total = 0
        for sender in self.pc.getSenders():
            with contextlib.suppress(Exception):
                for s in (await sender.getStats()).values():
                    if getattr(s, "type", "") == "outbound-rtp":
                        total += int(getattr(s, "bytesSent", 0) or 0)
        return total

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.pc.close()


def prepare_sender_webrtc(settings: Settings) -> None:
    if settings.webrtc.loopback_only:
        confine_to_loopback()
    install_sender_zero_timestamp_origin()
    set_sctp_rto_min(settings.webrtc.sctp_rto_min_ms / 1000)
    set_bitrate_limits(
        settings.webrtc.min_bitrate_kbps * 1000, settings.webrtc.max_bitrate_kbps * 1000
    )
    if settings.webrtc.bitrate_hysteresis > 0:
        install_bitrate_hysteresis(settings.webrtc.bitrate_hysteresis)
    else:
        uninstall_bitrate_hysteresis()


async def connect(
    settings: Settings,
    url: str,
    track: CaptureTrack | ReplayTrack | None,
    on_open: Callable[[], None],
    on_message: Callable[[str | bytes], None],
    clock: FrameClock | None = None,
    ice_servers: Sequence[IceServerLike] | None = None,
) -> Connection:
    """Offer a stream to the worker at ``url``; SignallingError (WorkerRefused) on failure.

    Without a track (``edge.uplink: keyframes``) the offer is a data channel alone: the edge
    sends its keyframes as stills on it (an older worker refuses such an offer, saying it
    has no video)."""
    servers = settings.webrtc.ice_servers if ice_servers is None else ice_servers
    pc = RTCPeerConnection(rtc_configuration(servers, settings.webrtc.ice_transport_policy))
    # Unordered (still reliable): a lost packet delays only its own message. Ordered, one lost
    # result held back every result after it until the retransmission (a tail on lossy links);
    # the edge drops results older than one it has shown, and nothing else depends on order.
    channel = pc.createDataChannel("mobieye", ordered=False)
    conn = Connection(url, pc, channel, track=track)

    @channel.on("open")
    def _opened() -> None:
        conn.opened.set()
        on_open()

    channel.on("message", on_message)
    if track is not None:
        transceiver = pc.addTransceiver(track, direction="sendonly")
        prefer_codec(transceiver, "video", settings.webrtc.codec)
    ticks = (track.clock if track is not None else clock or FrameClock()).ticks

    @pc.on("connectionstatechange")
    def _state() -> None:
        log.info("connection to %s %s", url, pc.connectionState)
        if pc.connectionState in ("failed", "closed"):
            conn.mark_lost(f"WebRTC connection {pc.connectionState}")

    try:
        await pc.setLocalDescription(await pc.createOffer())
        answer = await post_offer(
            url, {"sdp": pc.localDescription.sdp, "type": "offer",
                  "stream_id": settings.edge.stream_id, "frame_ticks": ticks,
                  "uplink": "video" if track is not None else "keyframes"},
            WorkerAccess.from_settings(settings),
        )  # fmt: skip
        conn.stream_id = _id_or_none(answer.get("stream_id"))
        conn.worker_id = _id_or_none(answer.get("worker_id"))
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
    except BaseException:
        await conn.close()
        raise
    return conn
