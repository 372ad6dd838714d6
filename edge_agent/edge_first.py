"""Edge-first offload (``edge.uplink: keyframes``): the edge tracks every frame itself and
sends the cloud only the frames it needs detected (Glimpse, Reducto, the hybrid edge/cloud
learner), as compressed stills.

Per frame, on one thread of its own (:meth:`EdgeFirst.step`, blocking):

1. the shown boxes move to the frame by optical flow;
2. a detection that arrived since (the cloud's for a still, or the on-device model's) is
   fast-forwarded from its frame through the kept frames since, and replaces them; track ids
   carry over by IoU (one id space for cloud and device boxes: a hand-over is no id switch);
3. the keyframe policy (mobieye/keyframe_policy.py) says whether this is a hard frame: the
   interval or age since the last still, a scene change, tracking quality, or the on-device
   model disagreeing with the tracked boxes; the budget (edge_agent/still_budget.py) says
   whether a still may go, at what quality.

The cloud's boxes are preferred: the on-device model's replace them only while there is no
cloud to rely on (start-up, outage, failover: offline, or a still unanswered for
``LOCAL_TAKEOVER_S``); otherwise the device model runs every ``LOCAL_CHECK_S`` to refresh the
tracked boxes' places and to find hard frames.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

from edge_agent.still_budget import StillBudget
from mobieye.accuracy import F1Score, match_counts
from mobieye.config import KeyframeConfig
from mobieye.controller import choose_model
from mobieye.detections import Detections, box_iou
from mobieye.keyframe_policy import (
    THUMB_SIZE,
    FrameFacts,
    KeyframeHistory,
    decide_keyframe,
    thumbnail_change,
    tune_age,
    tune_interval,
)
from mobieye.messages import ModelInfo, Result
from mobieye.stats import percentile
from mobieye.stills import StillFormat, StillHeader, encode_still, pack_still, still_size
from mobieye.tracking import FlowTracker, TrackAssigner, propagate

Gray = npt.NDArray[np.uint8]
Image = npt.NDArray[np.uint8]

KEEP_FRAMES = 90  # frames kept to fast-forward a detection through (3 s at 30 fps)
LOCAL_TAKEOVER_S = 1.0  # a still unanswered this long: the device model's boxes are shown
LOCAL_CHECK_S = 0.05  # while the cloud answers, the device model refreshes the boxes this often
STILL_TIMEOUT_SLAS = 3.0  # a still unanswered this many SLAs is given up ("retry")
KEEP_LATENCIES = 50  # recent keyframe round trips (quality and model choice)
MAX_LATENCIES = 100_000  # kept for the report
REFRESH_IOU = 0.3  # a device box this close to a tracked one is the same object, placed afresh
ADD_SCORE = 0.5  # a device box the cloud didn't have is shown from this confidence
FORGET_S = 10.0  # an answer later than this is not waited for at all


@dataclass(frozen=True, eq=False)
class Shown:
    """One frame as the edge shows it."""

    seq: int
    boxes: Detections  # pixels of the frame, with track ids
    base: str  # where they come from: "cloud", "local" or "none" (no detection yet)
    still: bytes | None  # a packed still to send for this frame, or None
    reason: str  # the keyframe policy's


@dataclass
class _Sent:
    capture_s: float
    sent_s: float
    given_up: bool = False  # its answer is still taken, but another still may go


def _overlaps(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.bool_]:
    """Per box of ``a``: whether it overlaps any box of ``b`` by IoU >= REFRESH_IOU."""
    if not len(a) or not len(b):
        return np.zeros(len(a), bool)
    return np.asarray(box_iou(a, b).max(axis=1) >= REFRESH_IOU)


class EdgeFirst:
    def __init__(
        self,
        keyframe: KeyframeConfig,
        accuracy_target: float,
        sla_ms: float,
        uplink_kbps: float | None,
        still_format: StillFormat = "jpeg",
        still_max_width: int = 640,
    ) -> None:
        self.cfg = keyframe
        self.accuracy_target = accuracy_target
        self.sla_ms = sla_ms
        self.budget = StillBudget(uplink_kbps)
        self.still_format: StillFormat = still_format
        self.still_max_width = still_max_width
        self.interval = keyframe.interval
        self.age_s = keyframe.max_age_s
        self._policy = keyframe  # with the tuned interval and age (remade only when they move)
        self.models: list[ModelInfo] = []
        self.model: str | None = None  # the controller's choice for the next still
        self._lock = threading.Lock()  # guards what the loop hands over: arrivals, sent stills
        self._arrived: list[tuple[Result, str, float]] = []  # (result, cloud|local, arrival)
        self._sent: OrderedDict[int, _Sent] = OrderedDict()  # stills awaiting an answer
        self._grays: OrderedDict[int, Gray] = OrderedDict()
        self._flow = FlowTracker()
        # Updated by every device check (20 Hz) and still: ids outlive 1.5 s unseen.
        self._assigner = TrackAssigner(max_misses=10, keep_lost=20)
        self.boxes = Detections.empty()
        self.base = "none"
        self._base_seq = -1
        self._names: dict[int, str] = {}
        self._history = KeyframeHistory()
        self._key_thumb: Gray | None = None
        self._local_agreement: float | None = None
        self._last_cloud_s: float | None = None
        self._last_local_check_s = float("-inf")
        self._given_up = False
        self._still_reason = ""
        self._online = False
        self.reasons: Counter[str] = Counter()
        self.latencies_ms: list[float] = []  # capture to cloud answer, per still
        self.transfer_ms: list[float] = []  # of which not the worker's detection
        self.given_up = 0
        # Sent the earliest still no answer has come for since (given-up ones included): the
        # edge's test of a worker that talks but no longer detects.
        self.first_unanswered_s: float | None = None
        self.agreement = F1Score()  # tracked boxes against each fresh cloud detection

    # -- from the event loop -------------------------------------------------------------------
    def on_cloud(self, result: Result, now: float) -> float | None:
        """A worker's answer to a still; its capture-to-answer latency (ms), or None when it
        answers no still of ours (stale, or given up)."""
        with self._lock:
            sent = self._sent.pop(result.seq, None)
            if sent is None:
                return None
            # An answer for a later still also answers the earlier ones: they are lost.
            for seq in [s for s in self._sent if s < result.seq]:
                del self._sent[seq]
            self._arrived.append((result, "cloud", now))
            self.first_unanswered_s = min((v.sent_s for v in self._sent.values()), default=None)
        self._last_cloud_s = now
        ms = (now - sent.capture_s) * 1000
        self.latencies_ms.append(ms)
        del self.latencies_ms[:-MAX_LATENCIES]
        self.transfer_ms.append((now - sent.sent_s) * 1000 - result.timings.detect_ms)
        del self.transfer_ms[:-KEEP_LATENCIES]
        return ms

    def new_connection(self) -> None:
        """The stream has a new worker (a move or a failover): stills the old one had are
        never answered; none is in flight, and the new worker's silence counts from now."""
        with self._lock:
            self._sent.clear()
            self.first_unanswered_s = None

    def on_local(self, result: Result, now: float) -> None:
        with self._lock:
            self._arrived.append((result, "local", now))

    def sent(self, seq: int, capture_s: float, now: float, nbytes: int) -> None:
        """A still for ``seq`` went out (the loop sent what :meth:`step` packed)."""
        with self._lock:
            self._sent[seq] = _Sent(capture_s, now)
            if self.first_unanswered_s is None:
                self.first_unanswered_s = now
        self.budget.spend(now, nbytes)

    def on_models(self, models: list[ModelInfo]) -> None:
        self.models = list(models)
        self.choose_model()

    def choose_model(self) -> None:
        """MDInference over the worker's models: the most accurate whose inference fits the
        SLA left after the stills' measured transfer (upload, queue, answer)."""
        transfer = percentile(self.transfer_ms, 50) if self.transfer_ms else 0.0
        best = choose_model(self.models, self.sla_ms - (transfer or 0.0))
        self.model = best.label if best is not None else None

    def adjust(self) -> int:
        """Once a controller period: the stills' quality (and model) for the next period."""
        recent = self.latencies_ms[-KEEP_LATENCIES:]
        p95 = percentile(recent, 95) if recent else None
        self.choose_model()
        return self.budget.adjust(p95, self.sla_ms)

    def wants_local(self, now: float) -> bool:
        """Whether the on-device model should look at the newest frame now."""
        if self._cloud_quiet(now):
            return True  # it supplies the boxes
        if now - self._last_local_check_s >= LOCAL_CHECK_S:
            self._last_local_check_s = now
            return True
        return False

    # -- on the edge-first thread --------------------------------------------------------------
    def step(self, seq: int, gray: Gray, image: Image, now: float, online: bool) -> Shown:
        """Track to this frame, take in what arrived, decide on a still (blocking)."""
        self._online = online
        self._grays[seq] = gray
        while len(self._grays) > KEEP_FRAMES:
            self._grays.popitem(last=False)
        moved, quality = self._flow.step(gray, self.boxes)
        self.boxes = moved
        self._assigner.set_tracked(moved)
        self._take_arrivals(seq, gray, now)
        thumb: Gray = np.asarray(cv2.resize(gray, THUMB_SIZE, interpolation=cv2.INTER_AREA))
        facts = FrameFacts(
            seq=seq,
            time_s=now,
            change=thumbnail_change(thumb, self._key_thumb) if self._key_thumb is not None else 1,
            track_quality=quality.mean,
            detector_busy=self._busy(now),
            detection_lost=self._take_given_up(),
            local_agreement=self._local_agreement,
        )
        decision = decide_keyframe(self._policy, self._history, facts)
        reason = decision.reason
        still = None
        if decision.detect:
            if not online:
                reason = "offline"
            elif self.budget.allows(now):
                still = self._still(seq, image)
                self._still_reason = reason
                self._history = self._history.after_detect(facts)
                self._key_thumb = thumb
                self._local_agreement = None
            else:
                reason = "budget"
                if self.budget.stale:  # measure the lower quality's size once
                    self.budget.observe(len(self._encode(image)))
        self.reasons[reason] += 1
        return Shown(seq, self.boxes.copy(), self.base, still, reason)

    @property
    def names(self) -> dict[int, str]:
        return dict(self._names)

    def _encode(self, image: Image) -> bytes:
        return encode_still(image, self.still_format, self.budget.quality, self.still_max_width)

    def _still(self, seq: int, image: Image) -> bytes:
        data = self._encode(image)
        w, h = still_size(data)
        header = StillHeader(seq=seq, format=self.still_format, width=w, height=h,
                             quality=self.budget.quality, model=self.model)  # fmt: skip
        return pack_still(header, data)

    def _busy(self, now: float) -> bool:
        """A still is in flight (one at a time); one unanswered too long is given up."""
        timeout = STILL_TIMEOUT_SLAS * self.sla_ms / 1000
        with self._lock:
            for seq in [s for s, v in self._sent.items() if now - v.sent_s > FORGET_S]:
                del self._sent[seq]
            late = [v for v in self._sent.values() if not v.given_up and now - v.sent_s > timeout]
            for v in late:
                v.given_up = True
            busy = any(not v.given_up for v in self._sent.values())
        if late:
            self.given_up += len(late)
            self._given_up = True
        return busy

    def _take_given_up(self) -> bool:
        lost, self._given_up = self._given_up, False
        return lost

    def _cloud_quiet(self, now: float) -> bool:
        """No cloud to rely on: offline, never answered yet, or a still has waited for its
        answer longer than ``LOCAL_TAKEOVER_S`` (stills are rare by design: the time since the
        last answer says nothing)."""
        waiting = self.first_unanswered_s
        return (
            not self._online
            or self._last_cloud_s is None
            or (waiting is not None and now - waiting > LOCAL_TAKEOVER_S)
        )

    def _take_arrivals(self, seq: int, gray: Gray, now: float) -> None:
        with self._lock:
            arrived, self._arrived = self._arrived, []
        cloud = [r for r, kind, _ in arrived if kind == "cloud"]
        local = [r for r, kind, _ in arrived if kind == "local"]
        if cloud:
            self._adopt(max(cloud, key=lambda r: r.seq), "cloud", seq, gray)
        for result in local:
            if self._cloud_quiet(now) and result.seq > self._base_seq:
                self._adopt(result, "local", seq, gray)
            else:
                self._judge_local(result)

    def _fast_forward(self, result: Result, seq: int, gray: Gray) -> Detections | None:
        """The result's boxes moved from its frame to frame ``seq``; None when its frame is no
        longer kept (too old to be worth moving)."""
        if result.seq not in self._grays or result.seq > seq:
            return None
        h, w = gray.shape
        dets = Detections.from_wire(result.boxes, w, h)
        for box in result.boxes:
            self._names[box.cls] = box.label
        grays = [g for s, g in self._grays.items() if result.seq <= s <= seq]
        if len({g.shape for g in grays}) > 1:
            return None  # the frame size changed meanwhile: the boxes' frame is gone
        return propagate(grays, dets)

    def _adopt(self, result: Result, kind: str, seq: int, gray: Gray) -> None:
        fresh = self._fast_forward(result, seq, gray)
        if fresh is None:
            return
        if kind == "cloud" and self.base != "none":
            self._tune(self.boxes, fresh)
        # A fresh detection is the whole truth at its frame: device-only extras go.
        self.boxes = self._assigner.update(fresh)
        self.base, self._base_seq = kind, result.seq

    def _tune(self, tracked: Detections, fresh: Detections) -> None:
        """The tracked boxes against the fresh detection: how much they had drifted."""
        counts = match_counts(tracked.xyxy, tracked.class_id, fresh.xyxy, fresh.class_id)
        self.agreement.add(counts)
        if not self.cfg.adaptive:
            return
        score = F1Score()
        score.add(counts)
        reason = self._still_reason  # one still in flight: the answer is to the last one
        interval = tune_interval(self.cfg, self.interval, score.f1, self.accuracy_target)
        age_s = tune_age(self.cfg, self.age_s, score.f1, self.accuracy_target, reason)
        if (interval, age_s) != (self.interval, self.age_s):
            self.interval, self.age_s = interval, age_s
            self._policy = self.cfg.model_copy(update={"interval": interval, "max_age_s": age_s})

    def _judge_local(self, result: Result) -> None:
        """The device model's boxes on a recent frame, moved to the newest, fused with the
        tracked ones (the cloud's from the last still, moved since). Where the two match, the
        device's box replaces the tracked one: the flow's drift corrected, the cloud's class
        and id kept. A tracked box the device doesn't confirm goes: kept longer, flow-tracked
        boxes drifted off crowded people (kept half a second: precision 0.73 on TUD-Campus
        against 0.87). A confident device box no shown box overlaps is added (someone new).
        Their agreement marks hard frames."""
        if result.seq not in self._grays:
            return
        newest = next(reversed(self._grays))
        here = self._fast_forward(result, newest, self._grays[newest])
        if here is None:
            return
        boxes = self.boxes
        score = F1Score()
        score.add(match_counts(here.xyxy, here.class_id, boxes.xyxy, boxes.class_id))
        self._local_agreement = score.f1
        matched_box = np.zeros(len(boxes), bool)
        matched_here = np.zeros(len(here), bool)
        if len(here) and len(boxes):
            iou = box_iou(boxes.xyxy, here.xyxy)
            iou[boxes.class_id[:, None] != here.class_id[None, :]] = 0.0
            rows, cols = linear_sum_assignment(iou, maximize=True)
            keep = iou[rows, cols] >= REFRESH_IOU
            boxes.xyxy[rows[keep]] = here.xyxy[cols[keep]]
            matched_box[rows[keep]] = True
            matched_here[cols[keep]] = True
        kept = boxes[matched_box]
        # An unpaired device box overlapping a kept one is that person again (the pairing gave
        # them to a neighbour): shown twice otherwise.
        new = ~matched_here & (here.confidence >= ADD_SCORE) & ~_overlaps(here.xyxy, kept.xyxy)
        self.boxes = self._assigner.update(Detections.concat([kept, here[new]]))
