"""One edge agent's stream on the worker: WebRTC peer, data channel and the frame pipeline.

Flow (``uplink: video``): the decoded-frame receiver puts frames into a latest-frame slot
(drop-oldest: the worker always works on the newest frame); the processing loop takes them, runs
the stream's processor step in the stream's own thread and sends each result on the data
channel. With ``uplink: keyframes`` (edge-first) there is no video: the edge sends the frames it
needs detected as binary stills on the data channel, served by cloud_worker/stills.py; their
results take the same way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from aiortc import MediaStreamTrack, RTCDataChannel, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

from cloud_worker.detector_pool import DetectorPool
from cloud_worker.frames import frame_array, luma
from cloud_worker.metrics import WorkerMetrics
from cloud_worker.processor import DecodedFrame, StepOutcome, StreamProcessor
from cloud_worker.stills import StillServer, Uplink
from cloud_worker.stream_status import Processing, StreamStatus
from mobieye.clock import FrameClock
from mobieye.config import Settings
from mobieye.errors import MessageError
from mobieye.fleet.payloads import Command, ObjectEvent, Setting, StreamState, StreamStats
from mobieye.messages import (
    Control,
    ErrorMessage,
    Hello,
    LatencyReport,
    Move,
    Moving,
    Result,
    Welcome,
    encode,
    parse_message,
)
from mobieye.slot import LatestSlot, SlotClosed
from mobieye.stills import is_still
from mobieye.tracking import AssignmentEvents
from mobieye.webrtc import LowLatencyJitterBuffer, jitter_buffer_of
from mobieye.webrtc.channel import InboundLimit, PeerChannel
from mobieye.webrtc.ice import selected_pair

log = logging.getLogger(__name__)


class StreamTap(Protocol):
    """Something watching the stream (a viewer, cloud_worker/viewers.py). Called on the event
    loop for every decoded frame and every result; must return at once (hand off, never wait)."""

    def on_frame(self, frame: VideoFrame) -> None: ...
    def on_result(self, result: Result, text: str) -> None: ...
    def on_stream_end(self) -> None: ...


class StreamSession:
    def __init__(
        self,
        stream_id: str,
        pc: RTCPeerConnection,
        settings: Settings,
        pool: DetectorPool,
        metrics: WorkerMetrics,
        worker_id: str,
        on_closed: Callable[[StreamSession], None],
        clock: FrameClock | None = None,
        uplink: Uplink = "video",
    ) -> None:
        self.stream_id = stream_id
        self.uplink = uplink
        self.pc = pc
        self.settings = settings
        self.pool = pool
        self.metrics = metrics
        self.worker_id = worker_id
        self.status = StreamStatus(stream_id, settings.controller.sla_ms, clock)
        self.channel: RTCDataChannel | None = None
        self._peer: PeerChannel | None = None
        w = settings.worker
        # One rate for every message the peer sends; sizes are checked per kind (_refusal).
        self._inbound = InboundLimit(
            max(w.max_message_bytes, w.max_still_bytes), w.max_messages_per_s
        )
        # When the session began, connected and last decoded a frame or still (its timeouts).
        self.created_s = time.monotonic()
        self.connected_s: float | None = None
        self.last_frame_s: float | None = None
        self.oversized = 0
        self._oversized_counted = 0
        self.close_reason: str | None = None
        self._closer: asyncio.Task[None] | None = None
        self.processor = StreamProcessor(
            stream_id, settings.keyframe, pool, settings.controller.accuracy_target,
            on_abandoned=metrics.detections_abandoned.labels(stream_id).inc,
        )  # fmt: skip
        self._jitter: LowLatencyJitterBuffer | None = None  # counts the uplink's bytes
        self.on_event: Callable[[ObjectEvent], None] | None = None
        self._slot: LatestSlot[tuple[VideoFrame, float, bool]] = LatestSlot(1)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"s-{stream_id}")
        self._tasks: list[asyncio.Task[None]] = []
        self._on_closed = on_closed
        self._closed = False
        self.taps: list[StreamTap] = []
        self.stills_received = 0  # still messages, taken or refused
        self.stills_refused = 0  # bad ones (and any on a video stream)
        self.stills: StillServer | None = None
        self.ice_pair: dict[str, str] | None = None  # which candidate pair carries it
        self.move_answer: Moving | None = None  # the edge's last word on it
        if uplink == "keyframes":
            self.stills = StillServer(
                stream_id, pool, self._executor, self.status, metrics,
                max_bytes=w.max_still_bytes, max_pixels=w.max_pixels,
                model=lambda: self.processor.model, deliver=self._deliver,
                refuse=self._refuse_still, send=self._send,
            )  # fmt: skip

        pc.on("track", self._on_track)
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_state)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self._tasks = [t for t in self._tasks if not t.done()]
        self._tasks.append(asyncio.ensure_future(coro))

    # -- WebRTC events -------------------------------------------------------------------------
    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind != "video" or self.uplink != "video":  # offers.check_sdp refuses those
            log.info("%s: ignoring %s track", self.stream_id, track.kind)
            return
        self._spawn(self._receive(track))
        self._spawn(self._process())

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if self.channel is not None:  # one channel per stream: a second is a peer misbehaving
            self.end("peer_failed", "it opened a second data channel")
            return
        self.channel = channel
        self._peer = PeerChannel(channel, self.end, self.settings.worker.max_buffered_bytes)
        channel.on("message", self._on_message)
        if channel.readyState == "open":
            self._welcome()
        else:
            channel.on("open", self._welcome)

    def _welcome(self) -> None:
        welcome = Welcome(
            worker_id=self.worker_id,
            model=self.processor.model,
            stream_id=self.stream_id,
            models=self.pool.model_infos(),
        )
        self._send(encode(welcome))

    @property
    def results_sent(self) -> int:
        return self.status.results_sent

    def sla_pressure(self) -> float | None:
        return self.status.sla_pressure()

    def send_stats(self, streams: int) -> None:
        """Called about once a second by the worker: inputs of the edge's controller."""
        stats = self.status.worker_stats(self.pool.model_infos(), streams, self._dropped())
        self._send(encode(stats))

    def _dropped(self) -> int:
        """Frames (or stills) a newer one replaced before the pipeline got to them."""
        return self.stills.dropped if self.stills is not None else self._slot.dropped

    def _detector_runs(self) -> int:
        stills = self.stills.detector_runs if self.stills is not None else 0
        return self.processor.detector_runs + stills

    def _processing(self) -> Processing:
        p = self.processor
        return Processing(p.model, p.keyframe.interval, self._detector_runs())

    # -- fleet (MQTT) -------------------------------------------------------------------------
    def stream_stats(self, worker_id: str) -> StreamStats:
        uplink = self._jitter.payload_bytes if self._jitter is not None else None
        return self.status.stream_stats(worker_id, self._processing(), uplink)

    async def apply_command(self, command: Command, worker_id: str) -> StreamState:
        """An operator's command from MQTT; returns the stream's resulting settings."""
        if command.model is not None or command.keyframe_interval is not None:
            await self._control(
                Control(model=command.model, keyframe_interval=command.keyframe_interval,
                        reason="MQTT command")
            )  # fmt: skip
        changed = self.status.on_command(command)
        if command.sla_ms is not None:
            self._send(encode(Control(sla_ms=command.sla_ms, reason="MQTT command")))
        return self.settings_state(worker_id, changed)

    def settings_state(self, worker_id: str, changed: Sequence[Setting] = ()) -> StreamState:
        """The settings in force, as mirrored on the stream's retained state topic."""
        return self.status.settings_state(worker_id, self._processing(), changed)

    async def _control(self, msg: Control) -> None:
        if self.status.on_control(msg) is not None and msg.level is not None:
            self.metrics.stream_level.labels(self.stream_id).set(msg.level)
        if msg.fps is not None:
            self.metrics.stream_fps.labels(self.stream_id).set(msg.fps)
        if msg.bitrate_kbps is not None:
            self.metrics.stream_bitrate.labels(self.stream_id).set(msg.bitrate_kbps)
        # A peer's value reaches a metric label only when it is one of our models.
        model = msg.model if msg.model in self.pool.stats else self.processor.model
        self.metrics.controller.labels(self.stream_id, model).inc()
        keyframe = None
        kf = self.processor.keyframe
        if msg.max_keyframe_interval is not None:
            top = max(msg.max_keyframe_interval, kf.min_interval)
            kf = kf.model_copy(update={"max_interval": top, "interval": min(kf.interval, top)})
            keyframe = kf
        if msg.keyframe_interval is not None:
            interval = min(max(msg.keyframe_interval, kf.min_interval), kf.max_interval)
            keyframe = kf.model_copy(update={"interval": interval})
        try:
            # On the stream's own thread, between two steps: no lock needed.
            await asyncio.get_running_loop().run_in_executor(
                self._executor, self.processor.configure, msg.model, keyframe
            )
        except KeyError as exc:
            self.metrics.bad_messages.labels(self.stream_id).inc()
            self._send(encode(ErrorMessage(message=f"control refused: {exc}")))
            return
        log.info("%s: control: model %s, interval %s (%s)", self.stream_id,
                 msg.model, msg.keyframe_interval, msg.reason)  # fmt: skip

    async def _on_state(self) -> None:
        state = self.pc.connectionState
        log.info("%s: connection %s", self.stream_id, state)
        if state == "connected" and self.connected_s is None:
            self.connected_s = time.monotonic()
            pair = self.ice_pair = selected_pair(self.pc)
            if pair is not None:
                log.info("%s: ICE pair %s -> %s (%s -> %s)", self.stream_id, pair["local"],
                         pair["remote"], pair["local_address"], pair["remote_address"])  # fmt: skip
        if state in ("failed", "closed"):
            await self.close("connection_failed" if state == "failed" else "ended")

    def check_timeouts(self, now: float | None = None) -> None:
        """Called once a second: end a session that never connects, never sends a frame, or
        stops sending them, so its slot comes back."""
        now = time.monotonic() if now is None else now
        w = self.settings.worker
        self._count_oversized()
        frame = "frame" if self.uplink == "video" else "still"
        if self.connected_s is None:
            if now - self.created_s > w.connect_timeout_s:
                self.end("connect_timeout", f"ICE not connected within {w.connect_timeout_s} s")
        elif self.last_frame_s is None:
            if now - self.connected_s > w.first_frame_timeout_s:
                self.end("first_frame_timeout", f"no {frame} within {w.first_frame_timeout_s} s")
        elif now - self.last_frame_s > w.idle_timeout_s:
            self.end("idle_timeout", f"no {frame} for {w.idle_timeout_s} s")

    def end(self, reason: str, detail: str = "") -> None:
        """Close this session (from a callback: returns at once); the first reason counts."""
        if self._closed or self._closer is not None:
            return
        log.warning("%s: closing: %s%s", self.stream_id, reason, f" ({detail})" if detail else "")
        self._closer = asyncio.ensure_future(self.close(reason))

    def _refusal(self, size: int, still: bool) -> str | None:
        """Why a message is refused before it is read: its size (a still's cap is its own),
        then the rate, one token bucket for every message the peer sends."""
        w = self.settings.worker
        limit = w.max_still_bytes if still else w.max_message_bytes
        if size > limit:
            kind = "still" if still else "message"
            return f"{kind} of {size} bytes exceeds the {limit}-byte limit"
        return self._inbound.check(size)

    def _on_message(self, raw: str | bytes) -> None:
        still = raw if isinstance(raw, bytes) and is_still(raw) else None
        refused = self._refusal(len(raw), still is not None)
        if refused is not None and refused.startswith("more than"):
            self.metrics.bad_messages.labels(self.stream_id).inc()
            self.end("flood", f"the peer sent {refused}")
            return
        if still is not None:
            self._on_still(still, refused)
            return
        if refused is not None:
            self.metrics.bad_messages.labels(self.stream_id).inc()
            self._send(encode(ErrorMessage(message=refused)))
            return
        try:
            msg = parse_message(raw)
        except MessageError as exc:
            self.metrics.bad_messages.labels(self.stream_id).inc()
            log.warning("%s: dropped data-channel message: %s", self.stream_id, exc)
            self._send(encode(ErrorMessage(message=str(exc))))
            return
        if isinstance(msg, Hello | Control | LatencyReport | Moving):
            self._alive()
        if isinstance(msg, Hello):
            if self.status.on_hello(msg):
                log.info("%s: frames stamped every %d ticks", self.stream_id, msg.frame_ticks)
            log.info(
                "%s: hello from edge: %dx%d at %.1f fps, source %r",
                self.stream_id,
                msg.width,
                msg.height,
                msg.fps,
                msg.source[:200],  # the peer's words: repr escapes control characters
            )
            if msg.failovers:
                log.info("%s: taken over from worker %s (failover %d)", self.stream_id,
                         msg.previous_worker or "?", msg.failovers)  # fmt: skip
        elif isinstance(msg, Control):
            self._spawn(self._control(msg))
        elif isinstance(msg, Moving):
            self.move_answer = msg
            log.info("%s: the edge %s: %s", self.stream_id,
                     "is moving" if msg.ok else "can't move", msg.detail[:300])  # fmt: skip
        elif isinstance(msg, LatencyReport):
            hist = self.metrics.frame_latency.labels(self.stream_id)
            for ms in msg.samples_ms:
                hist.observe(ms / 1000)
            self.status.on_latency(msg.samples_ms)
        else:
            self.metrics.bad_messages.labels(self.stream_id).inc()
            self._send(encode(ErrorMessage(message=f"unexpected message type {msg.type!r}")))

    def _send(self, text: str) -> None:
        if self._peer is not None:
            self._peer.send(text)  # a faulty peer ends its own session, nothing else

    def ask_to_move(self, reason: str, deadline_s: float) -> bool:
        """The worker drains: tell the edge to connect elsewhere (it goes on being served
        here until it leaves). False when the data channel can't carry it."""
        move = encode(Move(reason=f"draining ({reason})"[:200], deadline_s=deadline_s))
        return self._peer is not None and self._peer.send(move)

    # -- keyframe stills (uplink: keyframes) ---------------------------------------------------
    def _on_still(self, raw: bytes, refused: str | None) -> None:
        self.stills_received += 1
        if refused is not None:
            self._refuse_still(refused)  # "still of N bytes exceeds ..."
        elif self.stills is None:
            self._refuse_still("still refused: this stream's uplink is video (offer with "
                               "uplink 'keyframes' to send stills)")  # fmt: skip
        elif self.stills.put(raw) is not None:
            self.last_frame_s = time.monotonic()

    def _alive(self) -> None:
        """A keyframes edge with a static scene sends stills rarely but reports every second:
        once its first still came, any valid message keeps the session from idling out."""
        if self.uplink == "keyframes" and self.last_frame_s is not None:
            self.last_frame_s = time.monotonic()

    def _refuse_still(self, problem: str) -> None:
        """A bad still: counted and answered; the session goes on serving."""
        self.stills_refused += 1
        self.metrics.bad_messages.labels(self.stream_id).inc()
        log.warning("%s: %s", self.stream_id, problem)
        self._send(encode(ErrorMessage(message=problem)))

    def _deliver(self, result: Result, reason: str, events: AssignmentEvents | None = None) -> None:
        """Send a result to the edge and account for it: every result, video's or a still's."""
        text = encode(result)
        self._send(text)
        age = self.status.on_result(result, reason)
        for tap in self.taps:
            tap.on_result(result, text)
        self.metrics.worker_frame.labels(self.stream_id).observe(result.timings.total_ms / 1000)
        self.metrics.decisions.labels(self.stream_id, reason).inc()
        if age is not None:
            self.metrics.box_age.labels(self.stream_id).observe(age)
        if self.on_event is not None:
            for event in self.status.events(result, events):
                self.on_event(event)
        if result.source == "detect" and result.timings.detect_ms:
            self.metrics.inference.labels(result.model).observe(result.timings.detect_ms / 1000)

    # -- frame pipeline ------------------------------------------------------------------------
    async def _receive(self, track: MediaStreamTrack) -> None:
        receiver = next((r for r in self.pc.getReceivers() if r.track is track), None)
        jitter = jitter_buffer_of(receiver) if receiver is not None else None
        self._jitter = jitter
        frames = self.metrics.frames.labels(self.stream_id)
        if jitter is not None:
            jitter.max_pixels = self.settings.worker.max_pixels
        try:
            while True:
                frame = await track.recv()
                if not isinstance(frame, VideoFrame):
                    continue
                self.last_frame_s = time.monotonic()
                if self._too_large(frame):
                    continue
                damaged = (
                    jitter is not None and frame.pts is not None and jitter.is_damaged(frame.pts)
                )
                self.status.on_frame(damaged)
                frames.inc()
                before = self._slot.dropped
                self._slot.put((frame, time.monotonic(), damaged))
                if self._slot.dropped != before:
                    self.metrics.dropped.labels(self.stream_id).inc()
                for tap in self.taps:
                    tap.on_frame(frame)
        except MediaStreamError:
            log.info("%s: video track ended", self.stream_id)
        finally:
            self._slot.close()

    def _too_large(self, frame: VideoFrame) -> bool:
        """A decoded frame over worker.max_pixels is dropped (H264, or VP8 without the
        low-latency jitter buffer: VP8 key frames are dropped before decoding there)."""
        large = frame.width * frame.height > self.settings.worker.max_pixels
        if large:
            self.oversized += 1
            self._count_oversized(f", the last {frame.width}x{frame.height}")
        return large

    def _count_oversized(self, detail: str = "") -> None:
        """Count oversized frames (decoded or not) once; a few of them end the session."""
        w = self.settings.worker
        seen = self.oversized + (self._jitter.oversized if self._jitter is not None else 0)
        if seen > self._oversized_counted:
            self.metrics.frames_rejected.labels("too_large").inc(seen - self._oversized_counted)
            self._oversized_counted = seen
        if seen >= w.max_oversized_frames:
            self.end("oversized_frames", f"{seen} frames over {w.max_pixels} pixels{detail}")

    async def _process(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                frame, received_s, damaged = await self._slot.get()
            except SlotClosed:
                return
            queued_ms = (time.monotonic() - received_s) * 1000
            self.status.on_dequeued(queued_ms)
            try:
                outcome = await loop.run_in_executor(
                    self._executor, self._step, frame, received_s, damaged
                )
            except Exception:
                # One bad frame must not end the stream.
                log.exception("%s: processing frame pts=%s failed", self.stream_id, frame.pts)
                continue
            result = outcome.result
            total_ms = (time.monotonic() - received_s) * 1000
            result = result.model_copy(
                update={
                    "timings": result.timings.model_copy(
                        update={"queue_ms": round(queued_ms, 2), "total_ms": round(total_ms, 2)}
                    )
                }
            )
            self.metrics.tracking.labels(self.stream_id).observe(outcome.track_ms / 1000)
            self._deliver(result, outcome.decision.reason, outcome.events)

    def _step(self, frame: VideoFrame, received_s: float, damaged: bool) -> StepOutcome:
        pts = int(frame.pts or 0)
        decoded = DecodedFrame(
            seq=self.status.clock.seq(pts),
            pts=pts,
            gray=luma(frame),
            bgr=lambda: frame_array(frame, "bgr24"),
            received_s=received_s,
            damaged=damaged,
        )
        return self.processor.step(decoded)

    def summary(self) -> dict[str, object]:
        state = "closed" if self._closed else self.pc.connectionState
        p = self.processor
        return {
            **self.status.summary(state, self._dropped(), len(self.taps)),
            "close_reason": self.close_reason,
            "uplink": self.uplink,
            "ice_pair": self.ice_pair,
            "frames_oversized": self._oversized_counted,
            "stills_received": self.stills_received,
            "stills_dropped": self.stills.dropped if self.stills is not None else 0,
            "stills_refused": self.stills_refused,
            "stills_unanswered": self.stills.unanswered if self.stills is not None else 0,
            "detector_runs": self._detector_runs(),
            "detections_submitted": p.detections_submitted,
            "detections_abandoned": p.detections_abandoned,
            "detections_failed": p.detections_failed,
        }

    async def close(self, reason: str = "ended") -> None:
        if self._closed:
            return
        self._closed = True
        self.close_reason = reason
        self.metrics.sessions_closed.labels(reason).inc()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.stills is not None:
            await self.stills.close()
        self._slot.close()
        for tap in list(self.taps):
            tap.on_stream_end()
        self.taps.clear()
        await self.pc.close()
        self.processor.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.metrics.forget_stream(self.stream_id)
        log.info("%s: closed: %s", self.stream_id, self.summary())
        self._on_closed(self)
