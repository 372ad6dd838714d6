"""The edge agent: capture, stream over WebRTC, match results to frames, measure latency."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import sys
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from aiortc import RTCDataChannel

from edge_agent.connection import Connection, connect, prepare_sender_webrtc
from edge_agent.control import EdgeController
from edge_agent.edge_first import EdgeFirst, Shown
from edge_agent.failover import RETRY_S, Failover
from edge_agent.fallback import OnDeviceFallback
from edge_agent.ice import EdgeIce
from edge_agent.ledger import FrameLedger, SentFrame
from edge_agent.local_model import LocalModel, local_detector
from edge_agent.replay import ReplaySource, ReplayTrack
from edge_agent.report import RunStats, trace_record, write_report
from edge_agent.sources import CapturedFrame, VideoSource
from edge_agent.track import CaptureTrack
from edge_agent.writers import WRITER_CLOSE_S, TraceWriter, VideoRecorder
from mobieye.clock import FrameClock
from mobieye.config import Settings
from mobieye.detections import Detections
from mobieye.display import ArrivedResult, display_timeline
from mobieye.errors import ConfigError, MessageError, MobiEyeError, SignallingError
from mobieye.fleet.directory import WorkerDirectory
from mobieye.ids import is_valid_id
from mobieye.messages import (
    Control,
    ErrorMessage,
    Hello,
    LatencyReport,
    Move,
    Moving,
    Result,
    Timings,
    Welcome,
    WorkerStats,
    encode,
    parse_message,
)
from mobieye.slot import LatestSlot, SlotClosed
from mobieye.stats import percentile, percentiles
from mobieye.webrtc.ice import selected_pair

log = logging.getLogger(__name__)
T = TypeVar("T")

DRAIN_S = 1.0  # after the last frame, wait this long for results still in flight
LATENCY_REPORT_S = 1.0
RECORD_KEEP_FRAMES = 90
DISCOVERY_S = 10.0  # at start, wait this long for the fleet's retained worker states
CLOSE_S = 2.0  # longest wait for any one step of shutting down
MAX_PEER_ERRORS = 100  # worker error messages kept for the report
MOVE_RETRY_S = 2.0  # a draining worker's stream that found nowhere to go tries again after this
MOVE_OPEN_S = 5.0  # the next worker's data channel must open within this


async def _bounded(step: Awaitable[T], default: T, timeout_s: float = CLOSE_S) -> T:
    """A shutdown step that can't hang the exit (a dead peer, a stuck broker)."""
    try:
        return await asyncio.wait_for(step, timeout_s)
    except (TimeoutError, Exception) as exc:
        log.warning("shutdown step gave up: %r", exc)
        return default


@dataclass
class EdgeOutputs:
    trace: Path | None = None
    report: Path | None = None
    record: Path | None = None
    status: bool = False  # print a live one-line status to stderr
    keep_timeline: bool = False  # keep every frame's and result's timing (for the bench)


class EdgeAgent:
    def __init__(
        self,
        settings: Settings,
        source: VideoSource | ReplaySource,
        outputs: EdgeOutputs,
        directory: WorkerDirectory | None = None,
    ) -> None:
        self.settings = settings
        self.source = source
        self.outputs = outputs
        self.clock = FrameClock.for_fps(source.fps)
        self.ledger = FrameLedger(self.clock)
        self.stats = RunStats(source.spec.label)
        self.conn: Connection | None = None
        self.directory = directory
        self._pending_latency: list[float] = []
        self._images: OrderedDict[int, npt.NDArray[np.uint8]] = OrderedDict()
        self._trace = TraceWriter(outputs.trace) if outputs.trace else None
        self._recorder = (
            VideoRecorder(outputs.record, source.fps, (source.width, source.height))
            if outputs.record
            else None
        )
        self.on_result: Callable[[Result], None] | None = None
        # Edge-first (edge.uplink: keyframes): the edge tracks every frame and sends stills.
        if settings.edge.uplink == "keyframes" and isinstance(source, ReplaySource):
            raise ConfigError("edge.uplink keyframes needs the frames' pixels: a replayed "
                              "(already encoded) clip has none; use a video source")  # fmt: skip
        self.edge_first = (
            EdgeFirst(settings.keyframe, settings.controller.accuracy_target,
                      settings.controller.sla_ms, settings.controller.uplink_kbps,
                      settings.edge.still_format, settings.edge.still_max_width)
            if settings.edge.uplink == "keyframes"
            else None
        )  # fmt: skip
        self.controller = (
            EdgeController(settings.controller, settings.webrtc, source, self._send)
            if settings.controller.enabled and self.edge_first is None
            else None
        )
        self._last_heard_s = 0.0  # the newest message from the worker (edge-first liveness)
        self._budget_warned = False
        self._shown_with_boxes = 0  # edge-first: frames shown with at least one box
        self.fallback = OnDeviceFallback()
        # Every frame and result with its timing, for display/accuracy analysis (bench).
        self.keep_timeline = outputs.keep_timeline
        self._lost_worker: str | None = None  # the worker of the last failover, for the hello
        self.failover = Failover(settings.edge.result_timeout_s)
        self._move: Move | None = None  # the current worker drains: move before it goes
        self._move_task: asyncio.Task[Connection] | None = None
        self._move_retry_s = 0.0
        self._closing: set[asyncio.Task[None]] = set()  # connections left by a move
        self._hello_owed: set[int] = set()
        self.ice = EdgeIce(settings)
        self.ice_pair: dict[str, str] | None = None  # the candidate pair of the newest connection
        self._source_down_s: float | None = None  # the last moment a live source was down
        self.sent_frames: list[SentFrame] = []
        self.results: list[ArrivedResult] = []
        self.local_results: list[ArrivedResult] = []  # the on-device model's (bench scoring)
        self.local: LocalModel | None = None  # made in run(), on its loop
        self._newest: tuple[int, npt.NDArray[np.uint8]] | None = None  # for the local model
        # Where each frame's boxes came from: the cloud in time, the on-device model (moved by
        # the tracker to the frame), the tracker from a cloud result, or nothing yet.
        self.boxes_from: Counter[str] = Counter()
        self._bare_after_first = 0  # frames shown without boxes once some had come

    @property
    def channel(self) -> RTCDataChannel | None:
        return self.conn.channel if self.conn is not None else None

    def _send(self, text: str) -> None:
        if self.conn is not None:
            self.conn.send(text)

    # -- data channel --------------------------------------------------------------------------
    def _on_open_of(self, box: list[Connection]) -> None:
        """A connection's data channel opened: say hello on it (it may not be the stream's
        connection yet: one made ahead of a move)."""
        if box:
            box[0].send(self._hello())
        else:  # opened before connect() returned: hello once it has (_connect_any)
            self._hello_owed.add(id(box))

    def _on_message_of(self, box: list[Connection], raw: str | bytes) -> None:
        """Messages of the stream's connection are handled; a connection made ahead of a move
        holds its own (a welcome, stats) until it becomes the stream's."""
        if box and box[0] is self.conn:
            self._on_message(raw)
        elif box:
            box[0].held.append(raw)

    def _hello(self) -> str:
        hello = Hello(
            stream_id=self.stats.stream_id or "edge",
            frame_ticks=self.clock.ticks,
            fps=self.source.fps,
            width=self.source.width,
            height=self.source.height,
            source=self.source.spec.label,
            failovers=self.stats.failovers,
            previous_worker=self._lost_worker,
        )
        return encode(hello)

    def _on_message(self, raw: str | bytes) -> None:
        now = time.monotonic()
        try:
            msg = parse_message(raw)
        except MessageError as exc:
            log.warning("dropped message from worker: %s", exc)
            return
        self._last_heard_s = now
        if isinstance(msg, Result) and self.edge_first is not None:
            self._on_still_result(msg, now)
        elif isinstance(msg, Result):
            self._on_result(msg, now)
        elif isinstance(msg, WorkerStats):
            if self.controller is not None:
                self.controller.on_worker_stats(msg)
        elif isinstance(msg, Welcome):
            self.stats.worker_id = msg.worker_id
            if self.edge_first is not None:
                self.edge_first.on_models(msg.models)
            if self.controller is not None:
                self.controller.on_models(msg.models)
                self.controller.on_welcome(msg.worker_id)
            log.info("worker %s serves stream %s with %s", msg.worker_id, msg.stream_id, msg.model)
        elif isinstance(msg, Control) and msg.sla_ms is not None:
            # An operator changed the latency target (MQTT command via the worker).
            log.info("new SLA from the worker: %.0f ms", msg.sla_ms)
            controller = self.settings.controller.model_copy(update={"sla_ms": msg.sla_ms})
            self.settings = self.settings.model_copy(update={"controller": controller})
            if self.controller is not None:
                self.controller.cfg = controller
        elif isinstance(msg, Move):
            if self._move is None:
                log.warning("worker %s is %s: moving the stream to another worker within "
                            "%.0f s", self.stats.worker_id, msg.reason[:200],
                            msg.deadline_s)  # fmt: skip
                self._move = msg
        elif isinstance(msg, ErrorMessage):
            log.warning("worker refused a message: %s", msg.message[:300])
            if len(self.stats.errors) < MAX_PEER_ERRORS:  # a peer can't grow the report
                self.stats.errors.append(msg.message[:300])

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
            boxes = Detections.from_wire(result.boxes)  # kept normalised: sizes change
            self.results.append(ArrivedResult(match.frame.seq, now, boxes))
        self._pending_latency.append(round(match.latency_ms, 2))
        if self._trace is not None:
            self._trace.put(trace_record(match, result))
        if self._recorder is not None and not shown_already:
            image = self._images.pop(match.frame.seq, None)
            if image is not None:
                self._recorder.put((image, result))
        if self.on_result is not None:
            self.on_result(result)

    def _on_still_result(self, result: Result, now: float) -> None:
        """Edge-first: the worker's boxes for one of our stills (the edge-first thread moves
        them on to the newest frame)."""
        assert self.edge_first is not None
        ms = self.edge_first.on_cloud(result, now)
        if ms is None:
            return  # for a still given up, or not ours: the boxes it would replace are newer
        self.stats.last_result_s = now
        self.stats.frames_with_result += 1
        self.stats.detector_runs = max(self.stats.detector_runs, result.detector_runs)
        self.stats.model = result.model
        self._pending_latency.append(round(ms, 2))
        if self.on_result is not None:
            self.on_result(result)

    def _on_local_result(self, result: Result) -> None:
        """The on-device model's boxes for a frame: the newest boxes if no cloud result is
        newer (the fallback moves them on to every late frame after it)."""
        if self.edge_first is not None:
            self.edge_first.on_local(result, time.monotonic())
            return
        self.fallback.on_result(result)
        if self.keep_timeline:
            boxes = Detections.from_wire(result.boxes)
            self.local_results.append(ArrivedResult(result.seq, time.monotonic(), boxes))

    def _on_sent(self, frame: CapturedFrame) -> None:
        self._on_shown(frame)
        self.stats.frames_sent += 1
        if self.controller is not None:
            self.controller.on_sent()

    def _on_shown(self, frame: CapturedFrame) -> None:
        """A frame the user sees, sent to a worker or not (no worker reachable): it gets the
        cloud's boxes in time, or the on-device model's and the tracker's once it is late."""
        sent = self.ledger.sent(frame.seq, frame.capture_s, frame.index)
        if frame.gray is not None and self.edge_first is None:
            self.fallback.on_sent(frame.seq, frame.gray)
        if self.local is not None and frame.image is not None:
            self._newest = (frame.seq, frame.image)
        if self.keep_timeline:
            self.sent_frames.append(sent)
        if self._recorder is not None and frame.image is not None:
            self._images[frame.seq] = frame.image
            while len(self._images) > RECORD_KEEP_FRAMES:
                self._images.popitem(last=False)

    # -- run -----------------------------------------------------------------------------------
    async def run(self, duration_s: float | None = None) -> dict[str, Any]:
        """Stream until the duration passes or the source ends; returns the summary report.

        When the worker is lost (connection failed, its last will, or no results for
        ``edge.result_timeout_s``) the agent fails over to another worker (or, with a fixed
        worker URL, reconnects to it); capture and the on-device fallback go on meanwhile.
        """
        prepare_sender_webrtc(self.settings)
        # What is loaded by now lives as long as the agent: keep full collections (a pause of
        # every frame in flight) from walking it.
        gc.collect()
        gc.freeze()
        loop = asyncio.get_running_loop()
        slot: LatestSlot[CapturedFrame] = LatestSlot(1)
        deadline = time.monotonic() + duration_s if duration_s else None
        self._uplink_bytes = 0
        cpu_started = time.process_time()
        load_cpu_s = 0.0
        try:
            if self.settings.edge.local_model:
                await self._load_local(loop)
                # Loading (imports, session, warm-up) is paid once: per frame counts from here.
                load_cpu_s = time.process_time() - cpu_started
                cpu_started += load_cpu_s
            await self._run(loop, slot, deadline)
        except asyncio.CancelledError:
            # SIGTERM, SIGINT or a caller giving up, at any moment (connecting, streaming,
            # failing over): keep what was measured; the report below is still written.
            self.stats.errors.append("interrupted")
            log.warning("interrupted: finishing the report")
        finally:
            await self._shut_down(slot)
        uplink_bytes = self._uplink_bytes
        if self.edge_first is not None:
            uplink_bytes += self.edge_first.budget.sent_bytes
        report = self.stats.summary(uplink_bytes or None)
        report["source_reopens"] = self.source.reopens
        report.update(self._deadline_summary())
        # The whole process's CPU (capture, encoding, WebRTC, tracker, on-device model) per
        # captured frame: several agents in one process (the bench's replay) share it.
        cpu_ms = (time.process_time() - cpu_started) * 1000
        report["edge_cpu_ms_per_frame"] = round(cpu_ms / max(1, self.stats.frames_captured), 3)
        report["edge_cpu_load_s"] = round(load_cpu_s, 2)  # the on-device model's loading
        report["local_model"] = self._local_summary()
        report["uplink"] = self.settings.edge.uplink
        report["ice_pair"] = self.ice_pair
        report["ice_problems"] = self.ice.problems
        report["stills"] = self._stills_summary()
        if self.controller is not None:
            last = self.controller.decisions[-1] if self.controller.decisions else None
            report["controller"] = {"changes": self.controller.changes, "last": last}
        if self.outputs.report:
            await asyncio.to_thread(write_report, self.outputs.report, report)
        return report

    async def _load_local(self, loop: asyncio.AbstractEventLoop) -> None:
        spec = self.settings.edge.local_model
        assert spec is not None
        try:
            detector = local_detector(spec, self.settings.edge.local_threads)
        except MobiEyeError as exc:  # a path that doesn't exist, a bad IMGSZ
            log.error("edge.local_model %r: %s; the edge falls back to tracking the cloud's "
                      "boxes", spec, exc)  # fmt: skip
            self.stats.errors.append(f"local model: {exc}")
            return
        self.local = LocalModel(detector, self._on_local_result, loop)
        await self.local.load()
        if self.local.problem is not None:
            self.stats.errors.append(self.local.problem)

    def _stills_summary(self) -> dict[str, Any] | None:
        ef = self.edge_first
        if ef is None:
            return None
        b = ef.budget
        return {
            "frames_shown_with_boxes": self._shown_with_boxes,
            "sent": b.sent,
            "bytes_mean": round(b.sent_bytes / b.sent) if b.sent else None,
            "quality": b.quality,
            "format": ef.still_format,
            "budget_kbps": b.kbps,
            "keyframe_latency_ms": percentiles(ef.latencies_ms),
            "given_up": ef.given_up,
            "reasons": dict(ef.reasons.most_common()),
            "interval": ef.interval,
            "tracked_vs_fresh_f1": round(ef.agreement.f1, 4) if ef.agreement.frames else None,
        }

    def _local_summary(self) -> dict[str, Any] | None:
        if not self.settings.edge.local_model:
            return None
        local = self.local
        runs = local.detections if local is not None else 0
        return {
            "model": self.settings.edge.local_model,
            "ready": bool(local is not None and local.ready),
            "detections": runs,
            "ms_per_detection": round(local.busy_s * 1000 / runs, 2) if local and runs else None,
        }

    async def _run(
        self,
        loop: asyncio.AbstractEventLoop,
        slot: LatestSlot[CapturedFrame],
        deadline: float | None,
    ) -> None:
        started = False
        if self.directory is not None:
            await self.directory.start()
            await self.directory.wait_for_candidates(DISCOVERY_S)
        frames: asyncio.Task[None] | None = None
        if (self.local is not None and self.local.ready) or self.edge_first is not None:
            # Boxes from the first frame, whether a worker answers or not (edge-first: the
            # edge shows every frame itself, connected or not).
            self.stats.started_s = time.monotonic()
            self.source.start(loop, slot)
            started = True
        if self.edge_first is not None:
            frames = asyncio.create_task(self._edge_first_frames(slot, loop))
        try:
            await self._sessions(loop, slot, deadline, started)
        finally:
            if frames is not None:
                frames.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await frames

    async def _sessions(
        self,
        loop: asyncio.AbstractEventLoop,
        slot: LatestSlot[CapturedFrame],
        deadline: float | None,
        started: bool,
    ) -> None:
        """Connect, stream, move or fail over, until the run ends."""
        ready: Connection | None = None  # made ahead of a move
        while True:
            moving = ready is not None
            if ready is not None:
                conn: Connection | None = ready
                ready = None
            else:
                conn = await self._connect_offline(loop, slot, deadline, started)
            if conn is None:
                return
            await self._switch_to(conn, moving)
            if not started:
                self.stats.started_s = time.monotonic()
                self.source.start(loop, slot)
                started = True
            outcome = await self._stream(conn, slot, deadline)
            if isinstance(outcome, Connection):
                ready = outcome  # the draining worker's successor: switch, no gap
                continue
            self._uplink_bytes += await _bounded(conn.bytes_sent(), 0)
            await _bounded(conn.close(), None)
            if outcome:
                return
            self.stats.failovers += 1
            lost = conn.worker_id
            self._lost_worker = lost if lost and is_valid_id(lost) else None
            log.warning("lost worker %s: %s; failing over", conn.url,
                        conn.lost_reason)  # fmt: skip
            self.stats.errors.append(f"lost {conn.worker_id or conn.url}: "
                                     f"{conn.lost_reason}")  # fmt: skip
            self.failover.lost(conn.worker_id or conn.url, time.monotonic())

    async def _connect_offline(
        self,
        loop: asyncio.AbstractEventLoop,
        slot: LatestSlot[CapturedFrame],
        deadline: float | None,
        started: bool,
    ) -> Connection | None:
        """A connection to a worker (None: the run ended first); meanwhile the frames get the
        on-device model's and the tracker's boxes."""
        stop = asyncio.Event()
        offline = (
            asyncio.create_task(self._serve_offline(slot, stop))
            if started and self.edge_first is None
            else None
        )
        try:
            return await self._connect_until(slot, deadline, started)
        finally:
            if offline is not None:
                # The flag as well as the cancel: a cancel that lands as the slot hands
                # over a frame can be swallowed by wait_for (Python < 3.12), and this
                # await then never returned (found by the outage bench).
                stop.set()
                offline.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await offline

    async def _switch_to(self, conn: Connection, moving: bool) -> None:
        """Make ``conn`` the stream's connection. A move's (``moving``): the old one's track
        stops taking frames first, the new one's starts, and the old one closes in the
        background."""
        old = self.conn
        now = time.monotonic()
        if moving and old is not None and old is not conn:
            if old.track is not None:
                old.track.pause()
            self.stats.moves += 1
            log.warning("moved the stream from worker %s to %s", old.worker_id, conn.worker_id)
            self.failover.lost(old.worker_id or old.url, now)
            # Counted and closed in the background: the new track starts without waiting.
            closing = asyncio.create_task(self._leave(old))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
        self._move = None
        if self.edge_first is not None:
            self.edge_first.new_connection()
        self.conn = conn
        self.stats.stream_id = conn.stream_id
        self.stats.worker_id = conn.worker_id
        self._last_heard_s = now
        if conn.track is not None:
            conn.track.resume()
        while conn.held:  # its welcome, its first stats
            self._on_message(conn.held.popleft())

    async def _leave(self, old: Connection) -> None:
        """The connection a move left: its uplink bytes counted, then closed."""
        self._uplink_bytes += await _bounded(old.bytes_sent(), 0)
        await _bounded(old.close(), None)

    async def _connect_until(
        self, slot: LatestSlot[CapturedFrame], deadline: float | None, started: bool
    ) -> Connection | None:
        """A connection to a worker, trying until one takes the stream; None when the run
        ended first."""
        while True:
            try:
                return await self._connect_any(slot, self.failover.excluded(time.monotonic()))
            except SignallingError:
                if not started and not self._keep_trying():
                    raise  # nothing to fail over from: say why and stop
                if self._finished(deadline, slot):
                    return None
                await asyncio.sleep(RETRY_S)

    async def _serve_offline(self, slot: LatestSlot[CapturedFrame], stop: asyncio.Event) -> None:
        """No worker: every captured frame is shown, its boxes from the on-device model and
        the tracker once its deadline passes (the cloud can't answer it); until ``stop``."""
        while not stop.is_set():
            frame: CapturedFrame | None = None
            try:
                async with asyncio.timeout(0.1):
                    frame = await slot.get()
            except TimeoutError:
                pass
            except SlotClosed:
                return
            if frame is not None:
                self._on_shown(frame)
            now = time.monotonic()
            self.stats.frames_captured = self.source.captured
            await self._show_late_frames(now)

    def _keep_trying(self) -> bool:
        """At start, a fleet edge goes on while the fleet has a worker with room, and an edge
        with an on-device model while the run lasts; a fixed URL that refuses an edge without
        one fails at once (nothing else to try)."""
        if self.local is not None and self.local.ready:
            return True
        return self.directory is not None and bool(self.directory.candidates())

    async def _shut_down(self, slot: LatestSlot[CapturedFrame]) -> None:
        """Stop everything within a few seconds, whatever state the run was in."""
        await asyncio.to_thread(self.source.stop)  # joins the capture thread: not on the loop
        slot.close()
        if self.local is not None:
            self.local.close()
        self.stats.frames_captured = self.source.captured
        if self.stats.stopped_s is None:
            self.stats.stopped_s = time.monotonic()
        if self.conn is not None:
            await _bounded(self.conn.close(), None)
        if self._move_task is not None:
            self._move_task.cancel()
        if self._closing:
            await _bounded(asyncio.gather(*self._closing, return_exceptions=True), [])
        if self.directory is not None:
            await _bounded(self.directory.stop(), None)
        for writer in (self._trace, self._recorder):
            if writer is not None:
                # A writer thread that died or hangs on the disk can't hold the exit.
                await _bounded(asyncio.to_thread(writer.close), None, WRITER_CLOSE_S + 1)

    def _finished(self, deadline: float | None, slot: LatestSlot[CapturedFrame]) -> bool:
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return True
        return self.source.ended.is_set() and not len(slot)

    def _candidates(self, skip: set[str]) -> list[tuple[str, str]]:
        """(worker id or URL, URL) of the workers to try, the best first."""
        if self.directory is None:
            url = self.settings.edge.worker_url
            return [(url, url)]
        return [(w.id, w.url) for w in self.directory.candidates(skip) if w.url]

    def _track(
        self, slot: LatestSlot[CapturedFrame], paused: bool = False
    ) -> CaptureTrack | ReplayTrack:
        if isinstance(self.source, ReplaySource):
            return ReplayTrack(self.source, self.clock, self._on_sent, paused)
        return CaptureTrack(slot, self.clock, self._on_sent, paused)

    async def _connect_any(
        self,
        slot: LatestSlot[CapturedFrame],
        skip: set[str],
        ahead: bool = False,
    ) -> Connection:
        """Offer the stream to the best candidate; a refusal moves on to the next one, and a
        worker that refused or can't be reached is tried again only after the others.

        ``ahead``: a connection made ahead of a move: never to a worker in ``skip`` (the one
        draining), its track paused until it becomes the stream's (_switch_to)."""
        candidates = self._candidates(skip)
        if ahead:
            candidates = [(w, u) for w, u in candidates if w not in skip]
        if not candidates:
            raise SignallingError("no live worker with free capacity is known (yet)")
        problems = []
        for worker, url in candidates:
            track = self._track(slot, paused=ahead) if self.edge_first is None else None
            box: list[Connection] = []
            try:
                servers = await self.ice.servers_for(url)
                conn = await connect(
                    self.settings, url, track,
                    functools.partial(self._on_open_of, box),
                    functools.partial(self._on_message_of, box),
                    self.clock, servers,
                )  # fmt: skip
                box.append(conn)
                if id(box) in self._hello_owed:
                    self._hello_owed.discard(id(box))
                    conn.send(self._hello())
            except SignallingError as exc:
                if track is not None:
                    track.stop()
                problems.append(str(exc))
                log.warning("%s", exc)
                if self.directory is not None:
                    self.failover.lost(worker, time.monotonic())
                continue
            if not ahead:
                self.stats.stream_id = conn.stream_id
                self.stats.worker_id = conn.worker_id
                log.info("streaming to worker %s at %s", conn.worker_id, url)
            return conn
        raise SignallingError("; ".join(problems))

    async def _stream(
        self, conn: Connection, slot: LatestSlot[CapturedFrame], deadline: float | None
    ) -> bool | Connection:
        """Stream on one connection; True when the run is over, False when the worker is lost,
        or the connection to switch to when the worker drains (made while this one serves)."""
        tty = self.outputs.status and sys.stderr.isatty()
        last_status = 0.0
        last_control = time.monotonic()
        connected_s = time.monotonic()
        while True:
            await asyncio.sleep(0.1)
            now = time.monotonic()
            if self.controller is not None and now - last_control >= self.controller.cfg.period_s:
                last_control = now
                await self.controller.tick(now, conn.pc)
            self.stats.frames_captured = self.source.captured
            if now - last_status >= LATENCY_REPORT_S:
                last_status = now
                self._flush_latency()
                self._note_ice_pair(conn)
                if self.outputs.status:
                    line = self.stats.status_line(now) if self.edge_first is None else (
                        self._edge_first_status(now))  # fmt: skip
                    print(("\r" + line) if tty else line, end="" if tty else "\n", file=sys.stderr)
            if self._finished(deadline, slot):
                break
            will = bool(conn.worker_id and self.directory
                        and self.directory.is_offline(conn.worker_id))  # fmt: skip
            if self._source_quiet(now):
                self._source_down_s = now
            lost = self.failover.loss(
                now, connected_s, self._last_answer_s(), will, self._source_down_s
            )
            if lost:
                conn.mark_lost(lost)
            if conn.lost.is_set():
                # A move under way may still have somewhere to go: that is the failover.
                return await self._finish_move(conn) or False
            successor = self._step_move(conn, slot, now)
            if successor is not None:
                return successor
            # Last: however long the fallback takes, the loss check above has run.
            if self.edge_first is None:
                await self._show_late_frames(now)
        await self._finish_move(conn, keep=False)
        await asyncio.to_thread(self.source.stop)
        self.stats.stopped_s = time.monotonic()
        await asyncio.sleep(DRAIN_S)
        self._flush_latency()
        if tty:
            print(file=sys.stderr)
        return True

    def _note_ice_pair(self, conn: Connection) -> None:
        """Which candidate pair carries the stream (host, srflx, prflx, relay), said once per
        connection."""
        pair = selected_pair(conn.pc)
        if pair is not None and pair != self.ice_pair:
            self.ice_pair = pair
            log.info("stream to worker %s goes %s -> %s (%s -> %s)", conn.worker_id,
                     pair["local"], pair["remote"], pair["local_address"],
                     pair["remote_address"])  # fmt: skip

    # -- moving (the worker drains) ------------------------------------------------------------
    def _step_move(
        self, conn: Connection, slot: LatestSlot[CapturedFrame], now: float
    ) -> Connection | None:
        """While the worker drains: make a connection to another one (in the background, the
        stream staying here meanwhile); the connection once ready, else None."""
        if self._move is None:
            return None
        task = self._move_task
        if task is None:
            if now >= self._move_retry_s:
                self._move_task = asyncio.create_task(self._connect_ahead(conn, slot))
            return None
        if not task.done():
            return None
        self._move_task = None
        try:
            return task.result()
        except Exception as exc:  # refused, unreachable, timed out, or aiortc's own errors
            detail = f"no other worker took the stream: {exc}"[:500]
            log.warning("cannot move yet: %s; staying on worker %s, trying again in %.0f s",
                        detail, conn.worker_id, MOVE_RETRY_S)  # fmt: skip
            conn.send(encode(Moving(ok=False, detail=detail)))
            self._move_retry_s = now + MOVE_RETRY_S
            return None

    async def _connect_ahead(self, conn: Connection, slot: LatestSlot[CapturedFrame]) -> Connection:
        """A connection to another worker than ``conn``'s, open and ready to take frames."""
        if self.directory is None:
            raise SignallingError(
                "the edge was started with a fixed worker URL (--worker URL): there is no other "
                "worker to move to (start it with --worker auto and a broker)"
            )
        old = conn.worker_id or conn.url
        conn.send(encode(Moving(ok=True, detail="connecting to another worker")))
        self._lost_worker = conn.worker_id
        ahead = await self._connect_any(slot, {old}, ahead=True)
        try:
            await asyncio.wait_for(ahead.opened.wait(), MOVE_OPEN_S)
        except BaseException:
            await _bounded(ahead.close(), None)
            raise
        log.info("worker %s is ready to take the stream over from %s", ahead.worker_id, old)
        return ahead

    async def _finish_move(self, conn: Connection, keep: bool = True) -> Connection | None:
        """The stream's connection ends during a move: the connection made ahead when it is
        ready (``keep``), else nothing (and it is closed)."""
        task, self._move_task = self._move_task, None
        if task is None:
            return None
        if not keep or not task.done():
            task.cancel()
        await asyncio.wait([task])  # a cancel of our own still propagates from here
        if task.cancelled() or task.exception() is not None:
            return None
        ahead = task.result()
        if keep:
            return ahead
        await _bounded(ahead.close(), None)
        return None

    def _last_answer_s(self) -> float | None:
        """When the worker last showed it serves us. Video: its newest result. Edge-first:
        stills go only when needed, so its newest message of any kind, unless a still has
        waited for its answer since before then."""
        ef = self.edge_first
        if ef is None:
            return self.stats.last_result_s
        waiting = ef.first_unanswered_s
        return self._last_heard_s if waiting is None else min(self._last_heard_s, waiting)

    async def _edge_first_frames(
        self, slot: LatestSlot[CapturedFrame], loop: asyncio.AbstractEventLoop
    ) -> None:
        """Edge-first: every captured frame is tracked and shown here, on a thread of its own;
        the hard ones go to the worker as stills while one is connected."""
        ef = self.edge_first
        assert ef is not None
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-first")
        adjusted = time.monotonic()
        try:
            while True:
                try:
                    frame = await slot.get()
                except SlotClosed:
                    return
                if frame.gray is None or frame.image is None:
                    continue  # a replayed frame has no pixels: edge-first needs a real source
                self._on_shown(frame)
                conn = self.conn
                online = conn is not None and not conn.lost.is_set() and conn.peer.open
                shown = await loop.run_in_executor(
                    executor, ef.step, frame.seq, frame.gray, frame.image, time.monotonic(),
                    online,
                )  # fmt: skip
                self._show(frame, shown)
                if shown.still is not None and conn is not None and conn.send(shown.still):
                    ef.sent(frame.seq, frame.capture_s, time.monotonic(), len(shown.still))
                    self.stats.frames_sent += 1
                if self.local is not None and ef.wants_local(time.monotonic()):
                    self.local.offer(frame.seq, frame.image)
                self._warn_budget(ef)
                if time.monotonic() - adjusted >= self.settings.controller.period_s:
                    # Here, between two steps: the thread never sees quality or model change.
                    adjusted = time.monotonic()
                    ef.adjust()
        finally:
            executor.shutdown(wait=False, cancel_futures=True)

    def _show(self, frame: CapturedFrame, shown: Shown) -> None:
        """An edge-first frame's boxes, shown now (counted, timed, kept for the bench)."""
        now = time.monotonic()
        self.stats.frames_captured = self.source.captured
        if shown.base == "none":
            self._count_bare()
            return
        self.boxes_from["local" if shown.base == "local" else "tracker"] += 1
        self._shown_with_boxes += bool(len(shown.boxes))
        self.stats.latencies_ms.append((now - frame.capture_s) * 1000)
        h, w = frame.gray.shape[:2] if frame.gray is not None else (1, 1)
        if self.keep_timeline:
            b = shown.boxes
            norm = Detections(b.normalized_xyxy(w, h), b.confidence, b.class_id, b.tracker_id)
            self.results.append(ArrivedResult(frame.seq, now, norm))
        if self._recorder is not None and frame.image is not None:
            self._images.pop(frame.seq, None)
            assert self.edge_first is not None
            boxes = shown.boxes.to_wire(w, h, self.edge_first.names)
            result = Result(seq=frame.seq, pts=0, source="track", model=shown.base, width=w,
                            height=h, boxes=boxes, timings=Timings())  # fmt: skip
            self._recorder.put((frame.image, result))

    def _edge_first_status(self, now: float) -> str:
        ef = self.edge_first
        assert ef is not None
        recent = ef.latencies_ms[-10:]
        p50 = percentile(recent, 50) if recent else None
        shown = sum(self.boxes_from.values())
        return (
            f"{now - self.stats.started_s:5.1f}s | {shown} frames shown, "
            f"{self._shown_with_boxes} with boxes | {ef.budget.sent} stills, quality "
            f"{ef.budget.quality} | keyframe round trip p50 "
            f"{'-' if p50 is None else f'{p50:.0f} ms'} | {self.stats.model or ef.model}"
        )

    def _warn_budget(self, ef: EdgeFirst) -> None:
        problem = ef.budget.too_small()
        if problem is not None and not self._budget_warned:
            self._budget_warned = True
            log.error("%s; the edge goes on with its own model and tracker", problem)
            self.stats.errors.append(problem)

    def _source_quiet(self, now: float) -> bool:
        """The source is reopening or has delivered nothing for a few frame periods: no
        frames, so no results, and the worker is not to blame."""
        last = self.source.last_frame_s
        quiet_after = max(0.5, 3 / max(1.0, self.source.target_fps))
        return self.source.reopening or (last is not None and now - last > quiet_after)

    async def _show_late_frames(self, now: float) -> None:
        """Frames past their deadline with no cloud result get the on-device fallback: the
        newest boxes (the cloud's or the on-device model's) moved to them by the tracker. The
        on-device model, when idle, starts on the newest frame (MDInference's duplicate)."""
        late = self.ledger.late_frames(now, self.settings.controller.sla_ms / 1000)
        if late and self.local is not None and self._newest is not None:
            self.local.offer(*self._newest)
        for frame in late:
            base = self.fallback.newest
            shown = await asyncio.to_thread(self.fallback.boxes_for, frame.seq)
            if shown is None or base is None:
                self._count_bare()
                continue
            self.boxes_from["local" if base.source == "local" else "tracker"] += 1
            if self._trace is not None:
                self._trace.put({"seq": frame.seq, "fallback": True, "from_seq": base.seq,
                                 "boxes": len(shown.boxes)})  # fmt: skip
            image = self._images.pop(frame.seq, None)
            if self._recorder is not None and image is not None:
                self._recorder.put((image, shown))

    def _count_bare(self) -> None:
        """A frame shown without boxes; the ones after the first answer are the failures
        (before it nothing is known, unless there is an on-device model)."""
        self.boxes_from["none"] += 1
        if self.stats.frames_with_result or self.boxes_from["local"]:
            self._bare_after_first += 1

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
        # Edge-first: no frame shows the cloud's own answer in time (the edge shows each at
        # once); "tracker" counts frames whose boxes the cloud's stills gave.
        cloud = in_time if self.edge_first is None else 0
        out["bare_frames_after_first_boxes"] = self._bare_after_first
        out["boxes_from"] = {"cloud": cloud, **{k: self.boxes_from[k] for k in
                                                ("local", "tracker", "none")}}  # fmt: skip
        return out

    def _flush_latency(self) -> None:
        if self._pending_latency:
            self._send(encode(LatencyReport(samples_ms=self._pending_latency)))
        self._pending_latency = []
