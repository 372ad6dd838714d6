"""The edge agent: capture, stream over WebRTC, match results to frames, measure latency."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription

from edge_agent.control import EdgeController
from edge_agent.display import ResultRecord, display_timeline
from edge_agent.fallback import OnDeviceFallback
from edge_agent.ledger import FrameLedger, SentFrame
from edge_agent.report import RunStats, write_report
from edge_agent.sources import CapturedFrame, VideoSource
from edge_agent.track import CaptureTrack
from edge_agent.writers import TraceWriter, VideoRecorder
from mobieye.config import Settings
from mobieye.errors import MessageError, SignallingError
from mobieye.messages import (
    RTP_CLOCK_HZ,
    ErrorMessage,
    Hello,
    LatencyReport,
    Result,
    Welcome,
    WorkerStats,
    encode,
    parse_message,
)
from mobieye.slot import LatestSlot
from mobieye.webrtc import (
    confine_to_loopback,
    install_sender_zero_timestamp_origin,
    prefer_codec,
    rtc_configuration,
    set_bitrate_limits,
)

log = logging.getLogger(__name__)

DRAIN_S = 1.0  # after the last frame, wait this long for results still in flight
LATENCY_REPORT_S = 1.0
RECORD_KEEP_FRAMES = 90


@dataclass
class EdgeOutputs:
    trace: Path | None = None
    report: Path | None = None
    record: Path | None = None
    status: bool = False  # print a live one-line status to stderr
    keep_timeline: bool = False  # keep every frame's and result's timing (for the bench)


def prepare_sender_webrtc(settings: Settings) -> None:
    if settings.webrtc.loopback_only:
        confine_to_loopback()
    install_sender_zero_timestamp_origin()
    set_bitrate_limits(
        settings.webrtc.min_bitrate_kbps * 1000, settings.webrtc.max_bitrate_kbps * 1000
    )


async def post_offer(url: str, payload: dict[str, Any], timeout_s: float = 10.0) -> dict[str, Any]:
    """Signal through the worker's POST /offer; errors say which worker and why."""
    endpoint = url.rstrip("/") + "/offer"
    try:
        async with httpx.AsyncClient(timeout=timeout_s, trust_env=False) as client:
            response = await client.post(endpoint, json=payload)
    except httpx.HTTPError as exc:
        raise SignallingError(f"cannot reach worker at {endpoint}: {exc!r}") from exc
    if response.status_code != 200:
        try:
            reason = response.json().get("error", response.text)
        except ValueError:
            reason = response.text
        raise SignallingError(
            f"worker {endpoint} refused the stream ({response.status_code}): {reason}"
        )
    answer: dict[str, Any] = response.json()
    return answer


class EdgeAgent:
    def __init__(self, settings: Settings, source: VideoSource, outputs: EdgeOutputs) -> None:
        self.settings = settings
        self.source = source
        self.outputs = outputs
        self.frame_ticks = max(1, round(RTP_CLOCK_HZ / source.fps))
        self.ledger = FrameLedger(self.frame_ticks)
        self.stats = RunStats(source.spec.label)
        self.channel: RTCDataChannel | None = None
        self._pending_latency: list[float] = []
        self._images: OrderedDict[int, npt.NDArray[np.uint8]] = OrderedDict()
        self._trace = TraceWriter(outputs.trace) if outputs.trace else None
        self._recorder = (
            VideoRecorder(outputs.record, source.fps, (source.width, source.height))
            if outputs.record
            else None
        )
        self._failed = asyncio.Event()
        self.on_result: Callable[[Result], None] | None = None
        self.controller = (
            EdgeController(settings.controller, settings.webrtc, source, self._send)
            if settings.controller.enabled
            else None
        )
        self.fallback = OnDeviceFallback()
        # Every frame and result with its timing, for display/accuracy analysis (bench).
        self.keep_timeline = outputs.keep_timeline
        self.sent_frames: list[SentFrame] = []
        self.results: list[ResultRecord] = []

    def _send(self, text: str) -> None:
        if self.channel is not None and self.channel.readyState == "open":
            self.channel.send(text)

    # -- data channel --------------------------------------------------------------------------
    def _on_open(self) -> None:
        assert self.channel is not None
        hello = Hello(
            stream_id=self.stats.stream_id or "edge",
            frame_ticks=self.frame_ticks,
            fps=self.source.fps,
            width=self.source.width,
            height=self.source.height,
            source=self.source.spec.label,
        )
        self.channel.send(encode(hello))

    def _on_message(self, raw: str | bytes) -> None:
        now = time.monotonic()
        try:
            msg = parse_message(raw)
        except MessageError as exc:
            log.warning("dropped message from worker: %s", exc)
            return
        if isinstance(msg, Result):
            self._on_result(msg, now)
        elif isinstance(msg, WorkerStats):
            if self.controller is not None:
                self.controller.on_worker_stats(msg)
        elif isinstance(msg, Welcome):
            self.stats.worker_id = msg.worker_id
            if self.controller is not None:
                self.controller.on_models(msg.models)
            log.info("worker %s serves stream %s with %s", msg.worker_id, msg.stream_id, msg.model)
        elif isinstance(msg, ErrorMessage):
            log.warning("worker refused a message: %s", msg.message)
            self.stats.errors.append(msg.message)

    def _on_result(self, result: Result, now: float) -> None:
        match = self.ledger.match(result, now)
        if match is None:
            return
        self.stats.add(match, result, now)
        if not match.in_order:
            return
        if self.controller is not None:
            self.controller.on_result(match.latency_ms)
        self.fallback.on_result(result)
        shown_already = match.frame.seq <= self.ledger.late_cursor  # by the fallback
        if self.keep_timeline:
            self.results.append(
                ResultRecord(
                    seq=match.frame.seq,
                    arrival_s=now,
                    xyxy=np.array([b.xyxy for b in result.boxes], np.float32).reshape(-1, 4),
                    class_id=np.array([b.cls for b in result.boxes], np.int64),
                    score=np.array([b.score for b in result.boxes], np.float32),
                )
            )
        self._pending_latency.append(round(match.latency_ms, 2))
        if self._trace is not None:
            self._trace.put(
                {
                    "seq": match.frame.seq,
                    "pts": result.pts,
                    "capture_s": round(match.frame.capture_s, 6),
                    "latency_ms": round(match.latency_ms, 2),
                    "source": result.source,
                    "detect_seq": result.detect_seq,
                    "boxes": len(result.boxes),
                    "model": result.model,
                    "timings": result.timings.model_dump(),
                }
            )
        if self._recorder is not None and not shown_already:
            image = self._images.pop(match.frame.seq, None)
            if image is not None:
                self._recorder.put((image, result))
        if self.on_result is not None:
            self.on_result(result)

    def _on_sent(self, frame: CapturedFrame) -> None:
        sent = self.ledger.sent(frame.seq, frame.capture_s, frame.index)
        if frame.gray is not None:
            self.fallback.on_sent(frame.seq, frame.gray)
        self.stats.frames_sent += 1
        if self.controller is not None:
            self.controller.on_sent()
        if self.keep_timeline:
            self.sent_frames.append(sent)
        if self._recorder is not None:
            self._images[frame.seq] = frame.image
            while len(self._images) > RECORD_KEEP_FRAMES:
                self._images.popitem(last=False)

    # -- run -----------------------------------------------------------------------------------
    async def run(self, duration_s: float | None = None) -> dict[str, Any]:
        """Stream until the duration passes or the source ends; returns the summary report."""
        prepare_sender_webrtc(self.settings)
        loop = asyncio.get_running_loop()
        slot: LatestSlot[CapturedFrame] = LatestSlot(1)
        track = CaptureTrack(slot, self.frame_ticks, self._on_sent)
        pc = RTCPeerConnection(rtc_configuration(self.settings.webrtc.ice_servers))
        self.channel = pc.createDataChannel("mobieye", ordered=True)
        self.channel.on("open", self._on_open)
        self.channel.on("message", self._on_message)
        transceiver = pc.addTransceiver(track, direction="sendonly")
        prefer_codec(transceiver, "video", self.settings.webrtc.codec)

        @pc.on("connectionstatechange")
        def _state() -> None:
            log.info("connection %s", pc.connectionState)
            if pc.connectionState == "failed":
                self.stats.errors.append("WebRTC connection failed")
                self._failed.set()

        uplink_bytes: int | None = None
        try:
            await pc.setLocalDescription(await pc.createOffer())
            answer = await post_offer(
                self.settings.edge.worker_url,
                {
                    "sdp": pc.localDescription.sdp,
                    "type": "offer",
                    "stream_id": self.settings.edge.stream_id,
                },
            )
            self.stats.stream_id = answer.get("stream_id")
            await pc.setRemoteDescription(
                RTCSessionDescription(sdp=answer["sdp"], type=answer["type"])
            )
            self.stats.started_s = time.monotonic()
            self.source.start(loop, slot)
            try:
                await self._stream(slot, duration_s, pc)
            except asyncio.CancelledError:
                # Ctrl-C: keep what was measured; the report below is still written.
                self.stats.errors.append("interrupted")
            uplink_bytes = await _bytes_sent(pc)
        finally:
            self.source.stop()
            slot.close()
            self.stats.frames_captured = self.source.captured
            with contextlib.suppress(Exception):
                await pc.close()
            for writer in (self._trace, self._recorder):
                if writer is not None:
                    await asyncio.to_thread(writer.close)
        report = self.stats.summary(uplink_bytes)
        report["reopens"] = self.source.reopens
        report.update(self._deadline_summary())
        if self.controller is not None:
            last = self.controller.decisions[-1] if self.controller.decisions else None
            report["controller"] = {"changes": self.controller.changes, "last": last}
        if self.outputs.report:
            await asyncio.to_thread(write_report, self.outputs.report, report)
        return report

    async def _stream(
        self, slot: LatestSlot[CapturedFrame], duration_s: float | None, pc: RTCPeerConnection
    ) -> None:
        deadline = time.monotonic() + duration_s if duration_s else None
        tty = self.outputs.status and sys.stderr.isatty()
        last_status = 0.0
        last_control = time.monotonic()
        while True:
            await asyncio.sleep(0.1)
            now = time.monotonic()
            await self._show_late_frames(now)
            if self.controller is not None and now - last_control >= self.controller.cfg.period_s:
                last_control = now
                await self.controller.tick(now, pc)
            self.stats.frames_captured = self.source.captured
            if now - last_status >= LATENCY_REPORT_S:
                last_status = now
                self._flush_latency()
                if self.outputs.status:
                    line = self.stats.status_line(now)
                    print(("\r" + line) if tty else line, end="" if tty else "\n", file=sys.stderr)
            if self._failed.is_set():
                break
            if deadline is not None and now >= deadline:
                break
            if self.source.ended.is_set() and not len(slot):
                break
        self.source.stop()
        self.stats.stopped_s = time.monotonic()
        await asyncio.sleep(DRAIN_S)
        self._flush_latency()
        if tty:
            print(file=sys.stderr)

    async def _show_late_frames(self, now: float) -> None:
        """Frames past their deadline with no cloud result get the on-device fallback."""
        for frame in self.ledger.late_frames(now, self.settings.controller.sla_ms / 1000):
            base = self.fallback.newest
            shown = await asyncio.to_thread(self.fallback.boxes_for, frame.seq)
            if shown is None or base is None:
                continue
            if self._trace is not None:
                self._trace.put({"seq": frame.seq, "fallback": True, "from_seq": base.seq,
                                 "boxes": len(shown.boxes)})  # fmt: skip
            image = self._images.pop(frame.seq, None)
            if self._recorder is not None and image is not None:
                self._recorder.put((image, shown))

    def _deadline_summary(self) -> dict[str, Any]:
        """Frames that missed the SLA, and those that showed fallback boxes instead."""
        sla = self.settings.controller.sla_ms
        in_time = sum(1 for v in self.stats.latencies_ms if v <= sla)
        captured = max(1, self.stats.frames_captured)
        out: dict[str, Any] = {
            "sla_ms": sla,
            "sla_miss_ratio": round(1 - in_time / captured, 4),
        }
        if self.keep_timeline:
            shown = display_timeline(
                [(f.seq, f.capture_s) for f in self.sent_frames], self.results, sla
            )
            out["fallback_frames"] = sum(1 for d in shown if d.shown == "fallback")
        else:
            out["fallback_frames"] = self.fallback.frames
        return out

    def _flush_latency(self) -> None:
        if self._pending_latency and self.channel and self.channel.readyState == "open":
            self.channel.send(encode(LatencyReport(samples_ms=self._pending_latency)))
        self._pending_latency = []


async def _bytes_sent(pc: RTCPeerConnection) -> int | None:
    total = 0
    for sender in pc.getSenders():
        with contextlib.suppress(Exception):
            stats = await sender.getStats()
            for s in stats.values():
                if getattr(s, "type", "") == "outbound-rtp":
                    total += int(getattr(s, "bytesSent", 0) or 0)
    return total or None
