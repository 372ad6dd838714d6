"""What the worker knows and says about one stream: counters, the settings in force, the edge
controller's steps, object events and the per-period stats. Pure: the session feeds it facts
(a frame arrived, a result went out, a message came) and asks it for messages to send; time
comes from an injected clock, so it is tested without sockets or sleeps.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from mobieye.capacity import WORKER_SLA_SHARE, pressure_of
from mobieye.clock import Clocks, FrameClock, frames_between
from mobieye.fleet.payloads import (
    MAX_DECISIONS,
    SETTINGS,
    BoxAge,
    Command,
    ControllerDecision,
    LatencyMs,
    ObjectEvent,
    Setting,
    StreamState,
    StreamStats,
)
from mobieye.messages import Box, Control, Hello, ModelInfo, Result, WorkerStats
from mobieye.stats import percentile
from mobieye.tracking import AssignmentEvents

MAX_SAMPLES = 10_000  # per stats period, drop-oldest: a period at 30 fps holds far fewer
RECENT_RESULTS = 90  # the latency window the overload governor reads (~3 s at 30 fps)
MIN_RECENT = 10


@dataclass(frozen=True)
class Processing:
    """What the stream's processor has in force and has done, read at stats time."""

    model: str
    keyframe_interval: int
    detector_runs: int


class StreamStatus:
    def __init__(
        self, stream_id: str, sla_ms: float, clock: FrameClock | None = None,
        clocks: Clocks | None = None,
    ) -> None:  # fmt: skip
        self.stream_id = stream_id
        self.sla_ms = sla_ms
        # From the offer (edge agents say it there), else the default until the edge's hello.
        self.clock = clock or FrameClock()
        self.clocks = clocks or Clocks()
        self.started_s = self.clocks.monotonic()
        self.frames_received = 0
        self.results_sent = 0
        self.damaged_frames = 0
        self.decisions: Counter[str] = Counter()  # keyframe policy reasons, for summary()
        # The edge controller's setting in force and its steps since the last MQTT stats
        # (drop-oldest: the newest steps say the most).
        self.controller: ControllerDecision | None = None
        self._steps: deque[ControllerDecision] = deque(maxlen=MAX_DECISIONS)
        self.failovers = 0  # the edge's, from its hello
        self.previous_worker: str | None = None
        # Since the last WorkerStats (the edge's controller inputs):
        self._queue_ms: deque[float] = deque(maxlen=MAX_SAMPLES)
        self._ctl_received = 0
        self._ctl_dropped = 0
        # Since the last MQTT stats:
        self._latency: deque[float] = deque(maxlen=MAX_SAMPLES)
        self._box_ages: deque[int] = deque(maxlen=MAX_SAMPLES)
        self._stats_at = self.started_s
        self._stats_frames = 0
        self._stats_bytes = 0
        self._stats_runs = 0
        self._stats_results = 0
        self._recent_ms: deque[float] = deque(maxlen=RECENT_RESULTS)  # received -> sent
        self._recent_e2e: deque[float] = deque(maxlen=RECENT_RESULTS)  # the edge's, reported
        self._last_boxes: dict[int, Box] = {}  # where each track was last seen, for its "end"
        self._detect_seq: int | None = None  # the frame the newest result's boxes came from

    # -- facts in ------------------------------------------------------------------------------
    def on_frame(self, damaged: bool) -> None:
        self.frames_received += 1
        self.damaged_frames += damaged

    def on_dequeued(self, queued_ms: float) -> None:
        self._queue_ms.append(queued_ms)

    def on_result(self, result: Result, reason: str) -> int | None:
        """A result went to the edge; returns its box age in frames (None: no detection yet)."""
        self.results_sent += 1
        self.decisions[reason] += 1
        self._recent_ms.append(result.timings.total_ms)
        if result.detect_seq is not None:
            self._detect_seq = result.detect_seq
        age = frames_between(result.detect_seq, result.seq)
        if age is not None:
            self._box_ages.append(age)
        return age

    def on_unanswered(self, seq: int) -> int | None:
        """A keyframe still (edge-first uplink) that got no result: the edge goes on with the
        boxes of the last one answered, so their age counts as this frame's box age (a stream
        whose stills stop being answered has stale boxes). None: none answered yet."""
        age = frames_between(self._detect_seq, seq)
        if age is not None:
            self._box_ages.append(age)
        return age

    def sla_pressure(self) -> float | None:
        """How near the stream's recent p95 is to its SLA (1: at it). The edge's capture-to-
        result latency where it reports it (that sees frames queued before decoding, which
        the worker's own timing can't), else the worker's latency against its share."""
        if len(self._recent_e2e) >= MIN_RECENT:
            return pressure_of(list(self._recent_e2e), self.sla_ms)
        if len(self._recent_ms) >= MIN_RECENT:
            return pressure_of(list(self._recent_ms), self.sla_ms * WORKER_SLA_SHARE)
        return None

    def on_hello(self, hello: Hello) -> bool:
        """The edge's hello; True when it stamps frames otherwise than assumed so far."""
        self.failovers, self.previous_worker = hello.failovers, hello.previous_worker
        if hello.frame_ticks == self.clock.ticks:
            return False
        self.clock = FrameClock(hello.frame_ticks)
        return True

    def on_latency(self, samples_ms: Sequence[float]) -> None:
        self._latency.extend(samples_ms)
        self._recent_e2e.extend(samples_ms)

    def on_control(self, msg: Control) -> ControllerDecision | None:
        """Keep an edge controller's step (it names its level) for the fleet's dashboard."""
        if msg.level is None:
            return None
        step = ControllerDecision(
            at=self.clocks.wall(), level=msg.level, fps=msg.fps, max_width=msg.max_width,
            bitrate_kbps=msg.bitrate_kbps, model=msg.model, reason=msg.reason,
        )  # fmt: skip
        self.controller = step
        self._steps.append(step)
        return step

    def on_command(self, command: Command) -> list[Setting]:
        """An operator's command: the settings it names (the SLA is this object's to keep)."""
        if command.sla_ms is not None:
            self.sla_ms = command.sla_ms
        given = command.model_dump(exclude_none=True)
        return [k for k in SETTINGS if k in given]

    # -- messages out --------------------------------------------------------------------------
    def worker_stats(self, models: list[ModelInfo], streams: int, dropped: int) -> WorkerStats:
        """The edge controller's inputs since the last call; ``dropped``: frames the
        latest-frame slot has replaced so far."""
        queue = list(self._queue_ms)
        self._queue_ms.clear()
        received = self.frames_received - self._ctl_received
        skipped = dropped - self._ctl_dropped
        self._ctl_received, self._ctl_dropped = self.frames_received, dropped
        return WorkerStats(
            models=models,
            queue_ms=round(sum(queue) / len(queue), 2) if queue else 0.0,
            streams=streams,
            dropped_ratio=round(min(1.0, skipped / received), 4) if received else None,
        )

    def stream_stats(
        self, worker_id: str, processing: Processing, uplink_bytes: int | None
    ) -> StreamStats:
        """The period since the last call, for ``P/streams/<id>/stats``."""
        now = self.clocks.monotonic()
        span = max(1e-6, now - self._stats_at)
        fps = (self.frames_received - self._stats_frames) / span
        self._stats_at, self._stats_frames = now, self.frames_received
        uplink = None
        if uplink_bytes is not None:
            uplink = round((uplink_bytes - self._stats_bytes) * 8 / 1000 / span, 1)
            self._stats_bytes = uplink_bytes
        runs = processing.detector_runs - self._stats_runs
        results = self.results_sent - self._stats_results
        self._stats_runs, self._stats_results = processing.detector_runs, self.results_sent
        latency, self._latency = list(self._latency), deque(maxlen=MAX_SAMPLES)
        ages, self._box_ages = list(self._box_ages), deque(maxlen=MAX_SAMPLES)
        steps, self._steps = list(self._steps), deque(maxlen=MAX_DECISIONS)
        return StreamStats(
            stream=self.stream_id,
            worker=worker_id,
            fps=round(fps, 2),
            latency_ms=_latency(latency),
            model=processing.model,
            keyframe_interval=processing.keyframe_interval,
            detector_fraction=round(min(1.0, runs / results), 4) if results else 0.0,
            box_age_frames=_box_age(ages),
            uplink_kbps=uplink,
            damaged_frames=self.damaged_frames,
            controller=self.controller,
            decisions=steps,
            failovers=self.failovers,
            previous_worker=self.previous_worker,
            updated=self.clocks.wall(),
        )

    def settings_state(
        self, worker_id: str, processing: Processing, changed: Sequence[Setting] = ()
    ) -> StreamState:
        """The settings in force, as mirrored on the stream's retained state topic."""
        return StreamState(
            stream=self.stream_id,
            worker=worker_id,
            model=processing.model,
            keyframe_interval=processing.keyframe_interval,
            sla_ms=self.sla_ms,
            changed=list(changed),
        )

    def events(self, result: Result, changes: AssignmentEvents | None) -> list[ObjectEvent]:
        """Object events of this result: tracks that started, and tracks that ended (where they
        were last seen)."""
        out = []
        if changes is not None:
            now = self.clocks.wall()
            kinds: tuple[tuple[Literal["new", "end"], list[int]], ...] = (
                ("new", changes.new),
                ("end", changes.ended),
            )
            for kind, ids in kinds:
                for track_id in ids:
                    box = self._last_boxes.pop(track_id, None) if kind == "end" else None
                    box = box or next((b for b in result.boxes if b.track_id == track_id), None)
                    if box is None or track_id < 0:
                        continue
                    out.append(ObjectEvent(
                        type=kind, stream=self.stream_id, track_id=track_id, label=box.label,
                        box=list(box.xyxy), score=min(1.0, box.score), ts=now,
                    ))  # fmt: skip
        for box in result.boxes:
            self._last_boxes[box.track_id] = box
        return out

    def summary(self, state: str, dropped: int, viewers: int) -> dict[str, object]:
        return {
            "stream_id": self.stream_id,
            "state": state,
            "seconds": round(self.clocks.monotonic() - self.started_s, 1),
            "frames_received": self.frames_received,
            "frames_dropped": dropped,
            "damaged_frames": self.damaged_frames,
            "results_sent": self.results_sent,
            "viewers": viewers,
            "keyframe_decisions": dict(self.decisions),
        }


def _latency(samples: list[float]) -> LatencyMs | None:
    p50, p95 = percentile(samples, 50), percentile(samples, 95)
    return None if p50 is None or p95 is None else LatencyMs(p50=p50, p95=p95)


def _box_age(ages: list[int]) -> BoxAge | None:
    p50, p95 = percentile(ages, 50), percentile(ages, 95)
    return None if p50 is None or p95 is None else BoxAge(p50=p50, p95=p95, max=max(ages))
