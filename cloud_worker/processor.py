"""One stream's per-frame work: track every frame, detect on keyframes, asynchronously.

``step`` runs in the stream's own worker thread (never on the event loop) and is the only code
that touches the stream's tracking state, so it needs no locks. A detection runs in the detector
pool while tracking goes on; when it comes back it is fast-forwarded through the frames that
arrived since (Glimpse/MobiEye) and then associated with the existing tracks, keeping their ids.
At that moment the tracked boxes are compared with the fresh detection: their agreement tunes
the keyframe interval toward the accuracy target.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, wait
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt

from cloud_worker.detector_pool import DetectorPool, DetectOutput, PoolBusy
from mobieye.accuracy import F1Score, match_counts
from mobieye.config import KeyframeConfig
from mobieye.detections import Detections
from mobieye.keyframe_policy import (
    THUMB_SIZE,
    FrameFacts,
    KeyframeDecision,
    KeyframeHistory,
    decide_keyframe,
    stretched,
    thumbnail_change,
    tune_age,
    tune_interval,
)
from mobieye.messages import Result, Timings
from mobieye.tracking import (
    AssignmentEvents,
    FlowTracker,
    TrackAssigner,
    TrackQuality,
    propagate,
)

log = logging.getLogger(__name__)

Gray = npt.NDArray[np.uint8]
# A detection later than this many frames is stale: drop it rather than chase it through flow.
MAX_FAST_FORWARD_FRAMES = 45
# A new stream's detections per second are assumed at this frame rate and its configured
# keyframe interval (the edge's best level runs 30 fps) when its starting model is picked.
START_FPS = 30.0
STABLE_SCORE = 0.5  # agreement of tracked and fresh boxes is judged on these


KEEP_LOST = 5  # keyframes a missed track's id waits to be taken up again (~1 s)


# eq=False on every dataclass holding images: the generated __eq__ would compare arrays.
@dataclass(eq=False)
class DecodedFrame:
    seq: int
    pts: int
    gray: Gray  # luma: all that tracking needs
    bgr: Callable[[], npt.NDArray[np.uint8]]  # colour conversion, paid on keyframes only
    received_s: float  # monotonic, when the decoder handed it over
    damaged: bool = False


@dataclass(eq=False)
class _Pending:
    seq: int
    future: Future[DetectOutput]
    deadline_s: float  # monotonic: past it, the stream gives up on this detection
    grays: list[Gray] = field(default_factory=list)
    reason: str = "interval"  # the keyframe rule that asked for it


@dataclass(eq=False)
class StepOutcome:
    result: Result
    decision: KeyframeDecision
    events: AssignmentEvents | None
    track_ms: float


class StreamProcessor:
    def __init__(
        self,
        stream_id: str,
        keyframe: KeyframeConfig,
        pool: DetectorPool,
        accuracy_target: float = 0.8,
        on_abandoned: Callable[[], None] | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.keyframe = keyframe
        self.pool = pool
        self._chosen: str | None = None  # by the edge's controller; until then, the pool's
        pool.attach()
        self.accuracy_target = accuracy_target
        self.tracker = FlowTracker()
        # A track the next keyframe doesn't confirm is gone: keeping it would show a ghost box
        # for a whole interval (measured: precision vs the oracle 0.92 -> 0.97 on TUD).
        # Its id is remembered, hidden, for KEEP_LOST keyframes: seen again, it is the same
        # object (one missed detection or an occlusion was an identity switch).
        self.assigner = TrackAssigner(max_misses=0, keep_lost=KEEP_LOST)
        self.history = KeyframeHistory()
        self._stretched: tuple[KeyframeConfig, float, KeyframeConfig] | None = None
        self._key_thumb: Gray | None = None
        self._pending: _Pending | None = None
        self._closed = False
        self._lost = False  # a detection was abandoned: the next frame detects again
        self._shape: tuple[int, ...] | None = None
        self._last_detect_seq: int | None = None
        self._last_detect_ms = 0.0
        self._names = pool.names(self.model)
        self.detector_runs = 0  # detections completed and applied (not merely submitted)
        self.detections_submitted = 0
        self.detections_abandoned = 0  # given up past their deadline
        self._on_abandoned = on_abandoned
        self.detections_failed = 0
        self.agreement = F1Score()  # tracked vs fresh boxes at keyframes, over the stream

    @property
    def model(self) -> str:
        """The edge's choice, else a starting model the worker's present load allows."""
        if self._chosen is not None:
            return self._chosen
        return self.pool.starting_label(START_FPS / self.keyframe.interval)

    # -- control (called between steps, from the same thread) -----------------------------
    def configure(self, model: str | None = None, keyframe: KeyframeConfig | None = None) -> None:
        if model is not None:
            if model not in self.pool.detectors:
                raise KeyError(f"unknown model {model!r}")
            self._chosen = model
        if keyframe is not None:
            self.keyframe = keyframe

    # -- per frame -------------------------------------------------------------------------
    def step(self, frame: DecodedFrame) -> StepOutcome:
        started = time.perf_counter()
        gray = frame.gray
        if self._shape is not None and gray.shape != self._shape:
            self._resize(self._shape, gray.shape)
        self._shape = gray.shape
        thumb: Gray = np.asarray(
            cv2.resize(gray, THUMB_SIZE, interpolation=cv2.INTER_AREA), np.uint8
        )

        if self.keyframe.track_between:
            moved, quality = self.tracker.step(gray, self.assigner.tracks)
            self.assigner.set_tracked(moved)
        else:
            moved, quality = self.assigner.tracks, TrackQuality.perfect(len(self.assigner))
        source = "track" if len(moved) else "none"

        events = None
        if self._pending is not None:
            self._pending.grays.append(gray)
            if self._pending.future.done():
                events = self._harvest(self._pending)
                source = "detect" if events is not None else source
                self._pending = None
            elif (
                time.monotonic() > self._pending.deadline_s
                or len(self._pending.grays) > MAX_FAST_FORWARD_FRAMES
            ):
                self._abandon("stale")

        facts = FrameFacts(
            seq=frame.seq,
            time_s=frame.received_s,
            change=thumbnail_change(thumb, self._key_thumb) if self._key_thumb is not None else 1,
            track_quality=quality.mean,
            damaged=frame.damaged,
            detector_busy=self._pending is not None,
            detection_lost=self._lost,
        )
        decision = decide_keyframe(self._policy(), self.history, facts)
        self._lost = False
        if decision.detect:
            try:
                future = self.pool.submit(frame.bgr(), self.model)
            except PoolBusy:
                decision = KeyframeDecision(False, "pool_busy")
            else:
                deadline = time.monotonic() + self.pool.deadline_s(self.model)
                self._pending = _Pending(frame.seq, future, deadline, [gray], decision.reason)
                self.history = self.history.after_detect(facts)
                self._key_thumb = thumb
                self.detections_submitted += 1
                if self.keyframe.wait_for_detection:
                    # Conventional pipelines: this frame's result is its own detection.
                    wait([future], timeout=max(0.0, deadline - time.monotonic()))
                    if future.done():
                        events = self._harvest(self._pending)
                        source = "detect" if events is not None else source
                        self._pending = None
                    else:
                        self._abandon("timed out")

        track_ms = (time.perf_counter() - started) * 1000
        result = self._result(frame, source, track_ms)
        return StepOutcome(result, decision, events, track_ms)

    def _policy(self) -> KeyframeConfig:
        """The stream's policy as the worker's overload governor stretches it now (a
        conventional pipeline waits for every frame's detection: nothing to stretch)."""
        factor = 1.0 if self.keyframe.wait_for_detection else self.pool.keyframe_stretch
        cached = self._stretched
        if cached is None or cached[0] is not self.keyframe or cached[1] != factor:
            cached = self._stretched = (self.keyframe, factor, stretched(self.keyframe, factor))
        return cached[2]

    def _resize(self, old: tuple[int, ...], new: tuple[int, ...]) -> None:
        """The edge changed resolution: rescale the tracks, drop what can't be carried over."""
        sx, sy = new[1] / old[1], new[0] / old[0]
        tracks = self.assigner.tracks
        tracks.xyxy = tracks.xyxy * np.array([sx, sy, sx, sy], dtype=np.float32)
        self.assigner.set_tracked(tracks)
        self.tracker = FlowTracker()
        self._key_thumb = None
        if self._pending is not None:
            self.pool.cancel(self._pending.future)
            self._pending = None

    def _abandon(self, why: str) -> None:
        """Give up on the pending detection (it is late); the next frame detects again."""
        assert self._pending is not None
        pending, self._pending = self._pending, None
        self.pool.cancel(pending.future)
        self.detections_abandoned += 1
        self._lost = True
        if self._on_abandoned is not None:
            self._on_abandoned()
        log.warning("%s: detection of frame %d %s after %d frames; detecting again",
                    self.stream_id, pending.seq, why, len(pending.grays))  # fmt: skip

    def _harvest(self, pending: _Pending) -> AssignmentEvents | None:
        try:
            out = pending.future.result(timeout=0)
        except Exception as exc:  # the pool logged it; the stream goes on
            self.detections_failed += 1
            log.debug("%s: detection of frame %d failed: %r", self.stream_id, pending.seq, exc)
            return None
        dets = out.detections
        if len(pending.grays) > 1 and len(dets) and self.keyframe.track_between:
            dets = propagate(pending.grays, dets)
        h, w = pending.grays[-1].shape[:2]
        dets = dets.clip(w, h)
        self._tune(self.assigner.tracks, dets, pending.reason)
        self.assigner.update(dets)
        self._last_detect_seq = pending.seq
        self._last_detect_ms = out.inference_ms
        self.detector_runs += 1
        self._names = self.pool.names(out.model)
        return self.assigner.events

    def _tune(self, tracked: Detections, fresh: Detections, reason: str) -> None:
        if not self.keyframe.track_between or self.detector_runs < 1:  # nothing tracked yet
            return
        # Only confident boxes: those near the threshold come and go with image noise alone.
        tracked = tracked[tracked.confidence >= STABLE_SCORE]
        fresh = fresh[fresh.confidence >= STABLE_SCORE]
        counts = match_counts(tracked.xyxy, tracked.class_id, fresh.xyxy, fresh.class_id)
        self.agreement.add(counts)
        if self.keyframe.adaptive and len(tracked) + len(fresh):
            tp, fp, fn = counts
            f1 = 2 * tp / (2 * tp + fp + fn)
            kf = self.keyframe
            interval = tune_interval(kf, kf.interval, f1, self.accuracy_target)
            age = tune_age(kf, kf.max_age_s, f1, self.accuracy_target, reason)
            if interval != kf.interval or age != kf.max_age_s:
                self.keyframe = kf.model_copy(update={"interval": interval, "max_age_s": age})

    def _result(self, frame: DecodedFrame, source: str, track_ms: float) -> Result:
        h, w = frame.gray.shape[:2]
        boxes = self.assigner.tracks.to_wire(w, h, self._names)
        return Result(
            seq=frame.seq,
            pts=frame.pts,
            source=source,  # type: ignore[arg-type]
            detect_seq=self._last_detect_seq,
            model=self.model,
            width=w,
            height=h,
            boxes=boxes,
            timings=Timings(
                track_ms=round(track_ms, 2),
                detect_ms=round(self._last_detect_ms if source == "detect" else 0.0, 2),
            ),
            detector_runs=self.detector_runs,
            keyframe_interval=self.keyframe.interval,
        )

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.pool.detach()
        if self._pending is not None:
            self.pool.cancel(self._pending.future)
            self._pending = None
