"""The worker's side of the edge-first uplink (``uplink: keyframes``): offers with a data channel
alone, and keyframe stills on it, answered by a real worker (in this process, real model) to real
aiortc peers on loopback. Good stills get the same boxes the detector finds on them directly;
bad ones get an error naming the problem, and the session goes on serving."""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription, VideoStreamTrack

from cloud_worker.app import create_app
from cloud_worker.context import WorkerContext
from cloud_worker.main import build_detectors
from cloud_worker.offers import OfferRequest, check_sdp
from cloud_worker.stream_status import StreamStatus
from mobieye.config import load_settings
from mobieye.messages import (
    Box,
    ErrorMessage,
    Hello,
    LatencyReport,
    Message,
    Result,
    Timings,
    Welcome,
    encode,
    parse_message,
)
from mobieye.runtime import free_port
from mobieye.stills import (
    MAGIC,
    StillHeader,
    decode_still,
    encode_still,
    pack_still,
    still_size,
)
from mobieye.webrtc import confine_to_loopback, rtc_configuration
from tests.e2e.conftest import serving
from tests.e2e.hostile import SyntheticTrack, metric

IMGSZ = 320
WAIT_S = 30.0  # for an answer on a loaded 2-core machine


# -- offers (pure) ---------------------------------------------------------------------------
def _sdp(*media: str) -> str:
    head = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    lines = {
        "video": "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n",
        "audio": "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n",
        "application": "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n",
    }
    return head + "".join(lines[m] + f"a=mid:{i}\r\n" for i, m in enumerate(media))


def test_keyframes_offer_is_one_data_channel_and_no_media() -> None:
    assert check_sdp(_sdp("application"), "keyframes") is None
    video = check_sdp(_sdp("video", "application"), "keyframes")
    assert video is not None and "video" in video and "keyframes" in video
    audio = check_sdp(_sdp("audio", "application"), "keyframes")
    assert audio is not None and "audio" in audio
    none = check_sdp(_sdp(), "keyframes")
    assert none is not None and "no data channel" in none
    two = check_sdp(_sdp("application", "application"), "keyframes")
    assert two is not None and "2 data channel" in two


def test_video_offer_still_needs_its_video() -> None:
    assert check_sdp(_sdp("video", "application")) is None
    problem = check_sdp(_sdp("application"))
    assert problem is not None and "no video" in problem
    assert check_sdp(_sdp("application"), "video") == problem


def test_offer_names_its_uplink() -> None:
    assert OfferRequest(sdp="v=0", type="offer").uplink == "video"
    assert OfferRequest(sdp="v=0", type="offer", uplink="keyframes").uplink == "keyframes"
    with pytest.raises(ValueError, match="uplink"):
        OfferRequest(sdp="v=0", type="offer", uplink="split")  # type: ignore[arg-type]


def test_unanswered_stills_age_the_streams_boxes() -> None:
    """A keyframes stream whose stills stop being answered has stale boxes in its stats; one
    whose stills are answered has fresh ones (each result is its own still's detection)."""
    status = StreamStatus("s", sla_ms=200)
    for seq in (0, 30, 60):
        status.on_result(_result(seq), "still")
    assert status.on_unanswered(90) == 30
    assert status.on_unanswered(150) == 90
    assert [status.on_result(_result(seq), "still") for seq in (160,)] == [0]


def _result(seq: int) -> Result:
    return Result(seq=seq, pts=0, source="detect", detect_seq=seq, model="m", width=4, height=4,
                  boxes=[], timings=Timings())  # fmt: skip


# -- a real worker and real peers --------------------------------------------------------------
@asynccontextmanager
async def worker(model_path: Path, **worker: Any) -> AsyncIterator[tuple[str, WorkerContext]]:
    """A worker app served in this process on loopback (so the test can read its state)."""
    confine_to_loopback()
    settings = load_settings(
        None, {"detector": {"model": str(model_path), "imgsz": IMGSZ}, "worker": worker}
    )
    app = create_app(settings, build_detectors(settings), "w-stills")
    async with serving(app, free_port()) as url:
        yield url, app.state.worker


class Peer:
    """An edge as the worker sees it: a data channel, and a video track when ``track``."""

    def __init__(self, track: VideoStreamTrack | None = None) -> None:
        self.pc = RTCPeerConnection(rtc_configuration([]))
        self.channel = self.pc.createDataChannel("mobieye", ordered=True)
        if track is not None:
            self.pc.addTransceiver(track, direction="sendonly")
        self.uplink = "video" if track is not None else "keyframes"
        self.messages: list[Message] = []
        self.stream_id = ""
        self._arrived = asyncio.Event()
        self.channel.on("message", self._on_message)

    def _on_message(self, raw: str | bytes) -> None:
        self.messages.append(parse_message(raw))
        self._arrived.set()

    async def connect(self, client: httpx.AsyncClient, stream_id: str) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        body = {"sdp": self.pc.localDescription.sdp, "type": "offer", "stream_id": stream_id,
                "uplink": self.uplink}  # fmt: skip
        response = await client.post("/offer", json=body)
        assert response.status_code == 200, response.text
        answer = response.json()
        self.stream_id = answer["stream_id"]
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
        await self.wait_for(lambda m: isinstance(m, Welcome))
        self.send(encode(Hello(stream_id=stream_id, width=640, height=480, source="test")))

    def send(self, data: str | bytes) -> None:
        self.channel.send(data)

    async def wait_for(self, match: Callable[[Message], bool], seen: int = 0) -> Message:
        """The first message from index ``seen`` on that matches."""
        deadline = time.monotonic() + WAIT_S
        while True:
            found = next((m for m in self.messages[seen:] if match(m)), None)
            if found is not None:
                return found
            left = deadline - time.monotonic()
            assert left > 0, f"no such message; got {self.messages[seen:]}"
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)

    async def answer(self, raw: bytes, seq: int | None = None) -> Result | ErrorMessage:
        """Send a still; the worker's answer to it (its result, or the next error)."""
        seen = len(self.messages)
        self.send(raw)

        def answers(m: Message) -> bool:
            return isinstance(m, ErrorMessage) or (isinstance(m, Result) and m.seq == seq)

        msg = await self.wait_for(answers, seen)
        assert isinstance(msg, Result | ErrorMessage)
        return msg

    async def close(self) -> None:
        await self.pc.close()


@asynccontextmanager
async def peer(client: httpx.AsyncClient, stream_id: str, **kw: Any) -> AsyncIterator[Peer]:
    p = Peer(**kw)
    try:
        await p.connect(client, stream_id)
        yield p
    finally:
        await p.close()


def frame(clip: Path, index: int = 10) -> np.ndarray:
    """A real frame of the pedestrian clip (BGR)."""
    cap = cv2.VideoCapture(str(clip))
    try:
        for _ in range(index + 1):
            ok, image = cap.read()
            assert ok, f"{clip} has fewer than {index + 1} frames"
    finally:
        cap.release()
    return np.asarray(image, np.uint8)


def still(image: np.ndarray, seq: int, **header: Any) -> tuple[StillHeader, bytes, bytes]:
    """A JPEG still as the edge packs it: (its header, the JPEG, the message)."""
    data = encode_still(image, "jpeg", 80, max_width=header.pop("max_width", None))
    w, h = still_size(data)
    head = StillHeader(seq=seq, format="jpeg", width=w, height=h, quality=80, **header)
    return head, data, pack_still(head, data)


async def summary(client: httpx.AsyncClient, stream_id: str) -> dict[str, Any]:
    streams = (await client.get("/streams")).json()
    return next(s for s in streams["active"] + streams["recent"] if s["stream_id"] == stream_id)


def same_boxes(got: list[Box], want: list[Box]) -> None:
    assert len(got) == len(want), (got, want)
    for g, w in zip(sorted(got, key=lambda b: b.xyxy), sorted(want, key=lambda b: b.xyxy),
                    strict=True):  # fmt: skip
        assert g.cls == w.cls and g.label == w.label
        assert np.allclose(g.xyxy, w.xyxy, atol=0.01), (g, w)
        assert abs(g.score - w.score) < 0.02, (g, w)


@pytest.mark.asyncio
async def test_a_still_gets_the_boxes_its_detector_finds(
    model_path: Path, pedestrian_clip: Path
) -> None:
    image = frame(pedestrian_clip)
    header, jpeg, raw = still(image, seq=7)
    async with (
        worker(model_path) as (url, state),
        httpx.AsyncClient(base_url=url, trust_env=False, timeout=20) as client,
        peer(client, "kf") as edge,
    ):
        assert state.pool is not None
        label = state.sessions[edge.stream_id].processor.model
        result = await edge.answer(raw, seq=7)
        assert isinstance(result, Result), result
        assert (result.source, result.detect_seq, result.pts) == ("detect", 7, 0)
        assert (result.model, result.width, result.height) == (label, header.width, header.height)
        assert result.detector_runs == 1
        t = result.timings
        assert t.detect_ms > 0 and t.total_ms >= t.detect_ms and t.queue_ms >= 0
        people = [b for b in result.boxes if b.cls == 0]
        assert len(people) >= 3, result.boxes  # TUD-Stadtmitte: a street full of pedestrians

        # The same detector on the same decoded still, directly.
        detector = state.pool.detectors[label]
        decoded = decode_still(header, jpeg, state.settings.worker.max_pixels)
        (direct,) = await asyncio.to_thread(detector.detect, [decoded])
        w, h = header.width, header.height
        same_boxes(result.boxes, direct.clip(w, h).to_wire(w, h, detector.names))

        s = await summary(client, edge.stream_id)
        assert s["uplink"] == "keyframes"
        assert (s["stills_received"], s["stills_refused"], s["stills_dropped"]) == (1, 0, 0)
        assert (s["results_sent"], s["detector_runs"], s["frames_received"]) == (1, 1, 1)

        # A burst: at most one still waits, a newer one replaces it; the newest is answered.
        small = [still(image, seq=100 + i, max_width=160)[2] for i in range(6)]
        seen = len(edge.messages)
        for raw_small in small:
            edge.send(raw_small)
        await edge.wait_for(lambda m: isinstance(m, Result) and m.seq == 105, seen)
        await asyncio.sleep(0.5)  # anything still in flight
        answered = {m.seq for m in edge.messages[seen:] if isinstance(m, Result)}
        errors = [m for m in edge.messages[seen:] if isinstance(m, ErrorMessage)]
        s = await summary(client, edge.stream_id)
        assert errors == [] and s["stills_received"] == 7
        assert s["stills_dropped"] >= 1, s
        assert len(answered) + s["stills_dropped"] == 6, (answered, s)
        assert s["frames_dropped"] == s["stills_dropped"]
        text = (await client.get("/metrics")).text
        assert metric(text, "mobieye_frames_received_total", stream="kf") == 7
        decisions = metric(text, "mobieye_keyframe_decisions_total", reason="still", stream="kf")
        assert decisions == len(answered) + 1
        assert metric(text, "mobieye_frames_dropped_total", stream="kf") == s["stills_dropped"]


@pytest.mark.asyncio
async def test_bad_stills_are_refused_and_the_session_goes_on(
    model_path: Path, pedestrian_clip: Path
) -> None:
    image = frame(pedestrian_clip)
    header, jpeg, good = still(image, seq=1)
    ok, png = cv2.imencode(".png", cv2.resize(image, (160, 120), interpolation=cv2.INTER_AREA))
    assert ok

    def packed(head: dict[str, Any], body: bytes) -> bytes:
        text = json.dumps(head).encode()
        return MAGIC + struct.pack(">H", len(text)) + text + body

    base = {"seq": 2, "format": "jpeg", "width": header.width, "height": header.height}
    bad = {
        "garbage after the magic": (MAGIC + b"\x00\x08" + b"\xff\xd8{]not" + bytes(64), "JSON"),
        "header longer than the message": (MAGIC + b"\xff\xfe" + bytes(32), "header of 65534"),
        "a header claiming 100000x100000": (
            packed({**base, "width": 100_000, "height": 100_000}, jpeg), "width"),
        "a header claiming more pixels than allowed": (
            packed({**base, "width": 16000, "height": 16000}, jpeg), "pixels"),
        "a PNG claimed as jpeg": (
            packed({**base, "width": 160, "height": 120}, png.tobytes()), "claims jpeg but is"),
        "a header lying about the size": (packed({**base, "width": 320}, jpeg), "but is"),
        "a truncated JPEG": (packed(base, jpeg[: len(jpeg) // 2]), "does not decode"),
        "a still over max_still_bytes": (packed(base, jpeg + bytes(70_000)), "exceeds the"),
    }  # fmt: skip
    async with (
        worker(model_path) as (url, state),
        httpx.AsyncClient(base_url=url, trust_env=False, timeout=20) as client,
        peer(client, "bad") as edge,
    ):
        for name, (raw, says) in bad.items():
            answer = await edge.answer(raw)
            assert isinstance(answer, ErrorMessage), (name, answer)
            assert says in answer.message, (name, answer.message)
        # An edge's model name the worker doesn't have: answered with the stream's model.
        *_, unknown = still(image, seq=3, model="no-such-model")
        result = await edge.answer(unknown, seq=3)
        assert isinstance(result, Result), result
        assert result.model == state.sessions[edge.stream_id].processor.model
        # The session survived them all: a good still still gets its result.
        result = await edge.answer(good, seq=1)
        assert isinstance(result, Result) and any(b.cls == 0 for b in result.boxes), result
        s = await summary(client, edge.stream_id)
        assert s["state"] == "connected" and s["close_reason"] is None
        assert s["stills_refused"] == len(bad) and s["stills_received"] == len(bad) + 2
        text = (await client.get("/metrics")).text
        assert metric(text, "mobieye_bad_messages_total", stream="bad") == len(bad)


@pytest.mark.asyncio
async def test_a_still_on_a_video_stream_is_refused(
    model_path: Path, pedestrian_clip: Path
) -> None:
    *_, raw = still(frame(pedestrian_clip), seq=1, max_width=320)
    async with (
        worker(model_path) as (url, _),
        httpx.AsyncClient(base_url=url, trust_env=False, timeout=20) as client,
        peer(client, "video", track=SyntheticTrack()) as edge,
    ):
        answer = await edge.answer(raw)
        assert isinstance(answer, ErrorMessage) and "uplink is video" in answer.message
        await edge.wait_for(lambda m: isinstance(m, Result))  # its video is served as ever
        s = await summary(client, edge.stream_id)
        assert s["uplink"] == "video" and s["stills_refused"] == 1
        assert s["state"] == "connected"
        # And a keyframes offer that carries a video is refused with a reason.
        pc = RTCPeerConnection(rtc_configuration([]))
        pc.createDataChannel("mobieye")
        pc.addTransceiver(SyntheticTrack(), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        body = {"sdp": pc.localDescription.sdp, "type": "offer", "uplink": "keyframes"}
        response = await client.post("/offer", json=body)
        await pc.close()
        assert response.status_code == 400 and "video" in response.json()["error"]


@pytest.mark.asyncio
async def test_reports_keep_a_quiet_keyframes_stream_alive(
    model_path: Path, pedestrian_clip: Path
) -> None:
    """A static scene: one still, then only latency reports. The idle timeout leaves that
    session alone; it ends one that stops talking, and one that never sent a still."""
    idle_s = 2.0
    *_, raw = still(frame(pedestrian_clip), seq=1, max_width=320)
    report = encode(LatencyReport(samples_ms=[40.0]))
    async with (
        worker(model_path, idle_timeout_s=idle_s, first_frame_timeout_s=idle_s) as (url, _),
        httpx.AsyncClient(base_url=url, trust_env=False, timeout=20) as client,
        peer(client, "quiet") as quiet,
        peer(client, "stillless") as stillless,
    ):
        assert isinstance(await quiet.answer(raw, seq=1), Result)
        started = time.monotonic()
        while time.monotonic() - started < 3 * idle_s:
            quiet.send(report)
            if stillless.channel.readyState == "open":  # until the worker ends it
                stillless.send(report)
            await asyncio.sleep(0.4)
        s = await summary(client, quiet.stream_id)
        assert s["state"] == "connected" and s["close_reason"] is None, s
        gone = await summary(client, stillless.stream_id)
        assert gone["close_reason"] == "first_frame_timeout", gone

        await asyncio.sleep(idle_s + 2.5)  # silence: the worker's once-a-second check ends it
        s = await summary(client, quiet.stream_id)
        assert s["close_reason"] == "idle_timeout", s
