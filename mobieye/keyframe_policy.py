"""Keyframe policy: run the detector on this frame, or track?

A pure function of measured facts about the frame and the stream's history, so it is tested
without sockets and the controller can retune it (the config is the only knob).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from mobieye.config import KeyframeConfig

THUMB_SIZE = (64, 48)  # change is measured on a thumbnail: cheap and insensitive to noise


@dataclass(frozen=True)
class FrameFacts:
    seq: int
    time_s: float  # when the frame reached the worker (monotonic seconds)
    change: float  # mean absolute change since the last keyframe, 0..1
    track_quality: float  # mean fraction of flow points that tracked (1.0 with no boxes)
    damaged: bool = False  # decoded from a stream with lost packets since the last keyframe
    detector_busy: bool = False  # a detection of this stream is still running
    detection_lost: bool = False  # the stream just gave up on a late detection
    # Edge-first: F1 of the on-device model's boxes against the tracked ones on a recent frame
    # (None: not measured since the last keyframe). Disagreement marks a hard frame.
    local_agreement: float | None = None


@dataclass(frozen=True)
class KeyframeHistory:
    last_seq: int | None = None
    last_time_s: float | None = None

    def after_detect(self, facts: FrameFacts) -> KeyframeHistory:
        return KeyframeHistory(last_seq=facts.seq, last_time_s=facts.time_s)


@dataclass(frozen=True)
class KeyframeDecision:
    detect: bool
    reason: str


def decide_keyframe(
    cfg: KeyframeConfig, history: KeyframeHistory, facts: FrameFacts
) -> KeyframeDecision:
    """Decide for one frame. Reasons name the rule that fired (they are counted in metrics)."""
    if facts.damaged:
        # Lost packets leave stale regions until the next keyframe: a detection would be wrong.
        return KeyframeDecision(False, "damaged")
    if facts.detector_busy:
        return KeyframeDecision(False, "busy")
    if facts.detection_lost:
        return KeyframeDecision(True, "retry")  # the boxes have gone without a detection too long
    if history.last_seq is None or history.last_time_s is None:
        return KeyframeDecision(True, "first")
    since = facts.seq - history.last_seq
    if since < cfg.min_interval:
        return KeyframeDecision(False, "min_interval")
    if since >= cfg.interval:
        return KeyframeDecision(True, "interval")
    if facts.time_s - history.last_time_s >= cfg.max_age_s:
        return KeyframeDecision(True, "max_age")
    if facts.change >= cfg.scene_change:
        return KeyframeDecision(True, "scene_change")
    if facts.track_quality < cfg.min_track_quality:
        return KeyframeDecision(True, "tracking_quality")
    if facts.local_agreement is not None and facts.local_agreement < cfg.min_local_agreement:
        return KeyframeDecision(True, "local_disagrees")
    return KeyframeDecision(False, "track")


def stretched(cfg: KeyframeConfig, factor: float) -> KeyframeConfig:
    """The policy with every spacing rule ``factor`` times longer: what the worker's overload
    governor (mobieye/capacity.py) applies to all its streams alike, so keyframes thin out
    evenly instead of some streams' detections queueing behind others'. Past ``max_interval``
    too: under overload a late keyframe beats a late frame."""
    if factor <= 1.0:
        return cfg
    return cfg.model_copy(
        update={
            "interval": math.ceil(cfg.interval * factor),
            "min_interval": math.ceil(cfg.min_interval * factor),
            "max_interval": math.ceil(cfg.max_interval * factor),
            "max_age_s": cfg.max_age_s * factor,
            "max_age_cap_s": cfg.max_age_cap_s * factor,
        }
    )


def tune_interval(cfg: KeyframeConfig, interval: int, agreement: float, target: float) -> int:
    """Online keyframe-interval tuning toward an accuracy target.

    ``agreement`` is the F1 (IoU 0.5) of the tracked boxes against the fresh detection at a
    keyframe: how much the tracker had drifted by the end of the interval. Below the target the
    interval shrinks multiplicatively (drift grows fast); well above it, it grows by one frame.
    """
    if agreement < target:
        return max(cfg.min_interval, int(interval * 0.7))
    if agreement >= min(1.0, target + 0.1):  # >=: a target of 0.9 or more still grows
        return min(cfg.max_interval, interval + 1)
    return interval


MIN_AGE_S = 0.05  # the age limit never tunes below this (a frame or two at any rate)


def tune_age(
    cfg: KeyframeConfig, age_s: float, agreement: float, target: float, reason: str
) -> float:
    """The age limit (seconds) follows the same measured drift as the interval (frames).

    A fixed limit forces detections by the clock whatever the tracker manages: 0.5 s is every
    5 frames at 10 fps, however still the scene. Well above the target it grows by a tenth, up
    to ``max_age_cap_s``. It shrinks (as the interval does) only when it was the limit that
    fired (``reason`` of the keyframe judged): drift within the interval is the interval's to
    answer, and shrinking both would detect twice as often for the same drift.
    """
    if agreement < target:
        return max(MIN_AGE_S, age_s * 0.7) if reason == "max_age" else age_s
    if agreement >= min(1.0, target + 0.1):
        return min(cfg.max_age_cap_s, age_s * 1.1)
    return age_s


def thumbnail_change(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> float:
    """Mean absolute difference of two equal-size grey thumbnails, as a fraction of 255."""
    return float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16)))) / 255.0
