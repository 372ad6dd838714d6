"""One stream's per-frame work: track every frame, detect on keyframes, asynchronously.

``step`` runs in the stream's own worker thread (never on the event loop) and is the only code
that touches the stream's tracking state, so it needs no locks. A detection runs in the detector
pool while tracking goes on; when it comes back it is fast-forwarded through the frames that
arrived since (Glimpse/MobiEye) and then associated with the existing tracks, keeping their ids.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt

from cloud_worker.detector_pool import DetectorPool, DetectOutput, PoolBusy
from mobieye.config import KeyframeConfig
from mobieye.keyframe_policy import (
    THUMB_SIZE,
    Decision,
    FrameFacts,
    KeyframeHistory,
    decide,
    thumbnail_change,
)
from mobieye.messages import Box, Result, Timings
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


@dataclass
class DecodedFrame:
    seq: int
    pts: int
    gray: Gray  # luma: all that tracking needs
    bgr: Callable[[], npt.NDArray[np.uint8]]  # colour conversion, paid on keyframes only
    received_s: float  # monotonic, when the decoder handed it over
    damaged: bool = False


@dataclass
class _Pending:
    seq: int
    future: Future[DetectOutput]
    grays: list[Gray] = field(default_factory=list)


@dataclass
class StepOutcome:
    result: Result
    decision: Decision
    events: AssignmentEvents | None
    track_ms: float


class StreamProcessor:
    def __init__(
        self,
        stream_id: str,
        keyframe: KeyframeConfig,
        pool: DetectorPool,
        names: dict[int, str],
    ) -> None:
        self.stream_id = stream_id
        self.keyframe = keyframe
        self.pool = pool
        self.names = names
        self.tracker = FlowTracker()
        self.assigner = TrackAssigner()
        self.history = KeyframeHistory()
        self._key_thumb: Gray | None = None
        self._pending: _Pending | None = None
        self._last_detect_seq: int | None = None
        self._last_detect_ms = 0.0
        self.detector_runs = 0

    def step(self, frame: DecodedFrame) -> StepOutcome:
        started = time.perf_counter()
        gray = frame.gray
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
                if events is not None:
                    source = "detect"
                self._pending = None
            elif len(self._pending.grays) > MAX_FAST_FORWARD_FRAMES:
                log.warning("%s: detection of frame %d is stale", self.stream_id, self._pending.seq)
                self._pending = None

        facts = FrameFacts(
            seq=frame.seq,
            time_s=frame.received_s,
            change=thumbnail_change(thumb, self._key_thumb) if self._key_thumb is not None else 1,
            track_quality=quality.mean,
            damaged=frame.damaged,
            detector_busy=self._pending is not None,
        )
        decision = decide(self.keyframe, self.history, facts)
        if decision.detect:
            try:
                future = self.pool.submit(frame.bgr())
            except PoolBusy:
                decision = Decision(False, "pool_busy")
            else:
                self._pending = _Pending(frame.seq, future, [gray])
                self.history = self.history.after_detect(facts)
                self._key_thumb = thumb
                self.detector_runs += 1

        track_ms = (time.perf_counter() - started) * 1000
        result = self._result(frame, source, track_ms)
        return StepOutcome(result, decision, events, track_ms)

    def _harvest(self, pending: _Pending) -> AssignmentEvents | None:
        try:
            out = pending.future.result()
        except Exception:
            log.exception("%s: detection of frame %d failed", self.stream_id, pending.seq)
            return None
        dets = out.detections
        if len(pending.grays) > 1 and len(dets) and self.keyframe.track_between:
            dets = propagate(pending.grays, dets)
        h, w = pending.grays[-1].shape[:2]
        self.assigner.update(dets.clip(w, h))
        # The flow tracker's reference stays this frame; the ids now belong to fresh boxes.
        self._last_detect_seq = pending.seq
        self._last_detect_ms = out.inference_ms
        return self.assigner.events

    def _result(self, frame: DecodedFrame, source: str, track_ms: float) -> Result:
        h, w = frame.gray.shape[:2]
        tracks = self.assigner.tracks
        norm = tracks.normalized_xyxy(w, h)
        boxes = [
            Box(
                xyxy=(
                    round(float(b[0]), 4),
                    round(float(b[1]), 4),
                    round(float(b[2]), 4),
                    round(float(b[3]), 4),
                ),
                cls=int(c),
                label=self.names.get(int(c), str(int(c))),
                score=round(float(s), 3),
                track_id=int(t),
            )
            for b, c, s, t in zip(
                norm, tracks.class_id, tracks.confidence, tracks.tracker_id, strict=True
            )
        ]
        return Result(
            seq=frame.seq,
            pts=frame.pts,
            source=source,  # type: ignore[arg-type]
            detect_seq=self._last_detect_seq,
            model=self.pool.model_name,
            width=w,
            height=h,
            boxes=boxes,
            timings=Timings(
                track_ms=round(track_ms, 2),
                detect_ms=round(self._last_detect_ms if source == "detect" else 0.0, 2),
            ),
            detector_runs=self.detector_runs,
        )

    def close(self) -> None:
        if self._pending is not None:
            self._pending.future.cancel()
            self._pending = None
