"""Association of a keyframe's detections with the tracks carried over from earlier keyframes.

IoU between the (flow-moved) track boxes and the new detections, class-aware, solved as an
optimal assignment. Matched detections inherit the track id; tracks left unmatched survive a
few keyframes (a detector misses objects now and then) and then leave the live set. With
``keep_lost`` they are remembered, hidden, that many more keyframes: a detection no live track
takes is matched against them first and gets its old id back (ByteTrack's lost-track buffer:
an object the detector missed once, or that was occluded, keeps its identity); only then a
new id. A remembered track that nothing revives ends.
Pure computation: no I/O, no threads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

from mobieye.detections import NO_TRACK, Detections, box_iou


@dataclass(frozen=True, slots=True)
class AssignmentEvents:
    """Track ids that started / ended on the last update, for the object events published later."""

    new: list[int] = field(default_factory=list)
    ended: list[int] = field(default_factory=list)


class TrackCounts(NamedTuple):
    """One track's bookkeeping across keyframes (its box lives in the tracks' Detections)."""

    age: int
    """Keyframe updates seen since creation, the creating one included."""
    hits: int
    """Keyframes on which a detection matched it, the creating one included."""
    misses: int
    """Consecutive keyframes without a matching detection."""


class TrackAssigner:
    """Gives detections persistent track ids, one keyframe at a time.

    The live tracks are one :class:`Detections` (box, score, class, track id: the current box is
    the last detection's, or the last flow step after it) with parallel counters."""

    def __init__(
        self,
        iou_threshold: float = 0.3,
        max_misses: int = 1,
        *,
        class_aware: bool = True,
        first_id: int = 1,
        keep_lost: int = 0,
    ) -> None:
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError("iou_threshold must be in (0, 1]")
        if max_misses < 0:
            raise ValueError("max_misses must be >= 0")
        if keep_lost < 0:
            raise ValueError("keep_lost must be >= 0")
        self.keep_lost = keep_lost
        self._lost = Detections.empty()  # hidden: revived by a detection no live track takes
        self._lost_age = np.empty((0,), np.int64)  # keyframes since each one was lost
        self.iou_threshold = iou_threshold
        self.max_misses = max_misses
        self.class_aware = class_aware
        self._next_id = first_id
        self._tracks = Detections.empty()
        self._age = np.empty((0,), np.int64)
        self._hits = np.empty((0,), np.int64)
        self._misses = np.empty((0,), np.int64)
        self._events = AssignmentEvents()

    @property
    def tracks(self) -> Detections:
        """All live tracks, missed ones included, with their track ids (a copy)."""
        return self._tracks.copy()

    @property
    def counts(self) -> dict[int, TrackCounts]:
        """Each live track's age, hits and misses, by track id."""
        return {
            int(t): TrackCounts(int(a), int(h), int(m))
            for t, a, h, m in zip(
                self._tracks.tracker_id, self._age, self._hits, self._misses, strict=True
            )
        }

    @property
    def events(self) -> AssignmentEvents:
        """Which track ids started and ended on the last update (or reset)."""
        return self._events

    def __len__(self) -> int:
        return len(self._tracks)

    def update(self, detections: Detections) -> Detections:
        """Assign track ids to one keyframe's detections; returns them in the same order."""
        out = detections.copy()
        current = self._tracks
        n_trk, n_det = len(current), len(detections)
        det_to_trk = np.full((n_det,), -1, dtype=np.int64)
        if n_trk and n_det:
            iou = box_iou(current.xyxy, detections.xyxy)
            if self.class_aware:
                iou[current.class_id[:, None] != detections.class_id[None, :]] = 0.0
            # Pairs under the threshold are zeroed so they add nothing to the optimum and are
            # dropped below; the assignment then maximises IoU among admissible pairs only.
            iou[iou < self.iou_threshold] = 0.0
            rows, cols = linear_sum_assignment(iou, maximize=True)
            keep = iou[rows, cols] > 0.0
            det_to_trk[cols[keep]] = rows[keep]

        trk_to_det = np.full((n_trk,), -1, dtype=np.int64)
        matched_dets = np.flatnonzero(det_to_trk >= 0)
        trk_to_det[det_to_trk[matched_dets]] = matched_dets
        hit = trk_to_det >= 0
        misses = np.where(hit, 0, self._misses + 1)
        alive = hit | (misses <= self.max_misses)
        ended = self._remember(current[~alive])

        # Matched tracks take their detection's box, score and class; missed ones keep theirs.
        kept = current.copy()
        src = trk_to_det[hit]
        kept.xyxy[hit] = detections.xyxy[src]
        kept.confidence[hit] = detections.confidence[src]
        kept.class_id[hit] = detections.class_id[src]
        out.tracker_id[src] = kept.tracker_id[hit]

        unmatched = np.flatnonzero(det_to_trk < 0)
        revived_ids = self._revive(detections[unmatched])
        fresh = unmatched[revived_ids < 0]
        new_ids = np.arange(self._next_id, self._next_id + len(fresh), dtype=np.int64)
        self._next_id += len(fresh)
        revived_ids[revived_ids < 0] = new_ids
        out.tracker_id[unmatched] = revived_ids
        # Born tracks, revived or new: their counters start again.
        born = Detections(detections.xyxy[unmatched], detections.confidence[unmatched],
                          detections.class_id[unmatched], revived_ids)  # fmt: skip

        ones = np.ones((len(unmatched),), np.int64)
        self._tracks = Detections.concat([kept[alive], born]) if len(born) else kept[alive]
        self._age = np.concatenate([(self._age + 1)[alive], ones])
        self._hits = np.concatenate([(self._hits + hit)[alive], ones])
        self._misses = np.concatenate([misses[alive], ones * 0])
        self._events = AssignmentEvents(new=new_ids.tolist(), ended=ended)
        return out

    def _remember(self, gone: Detections) -> list[int]:
        """Tracks leaving the live set: into the lost buffer (ageing it); returns the ids that
        end now (expired from the buffer, or all of them without one)."""
        if not self.keep_lost:
            return [int(t) for t in gone.tracker_id]
        age = self._lost_age + 1
        expired = age > self.keep_lost
        ended = [int(t) for t in self._lost.tracker_id[expired]]
        self._lost = Detections.concat([self._lost[~expired], gone])
        self._lost_age = np.concatenate([age[~expired], np.zeros(len(gone), np.int64)])
        return ended

    def _revive(self, dets: Detections) -> npt.NDArray[np.int64]:
        """Per detection, the id of the lost track it matches (leaving the buffer), or -1."""
        ids = np.full(len(dets), -1, np.int64)
        if not len(dets) or not len(self._lost):
            return ids
        iou = box_iou(self._lost.xyxy, dets.xyxy)
        if self.class_aware:
            iou[self._lost.class_id[:, None] != dets.class_id[None, :]] = 0.0
        iou[iou < self.iou_threshold] = 0.0
        rows, cols = linear_sum_assignment(iou, maximize=True)
        keep = iou[rows, cols] > 0.0
        ids[cols[keep]] = self._lost.tracker_id[rows[keep]]
        left = np.ones(len(self._lost), bool)
        left[rows[keep]] = False
        self._lost, self._lost_age = self._lost[left], self._lost_age[left]
        return ids

    def set_tracked(self, boxes: Detections) -> None:
        """Replace track boxes with flow-moved ones, matched by tracker id.

        Boxes whose id is not a live track (-1, or a track that ended meanwhile) are ignored;
        tracks with no box keep theirs.
        """
        index = {int(t): i for i, t in enumerate(self._tracks.tracker_id)}
        for xyxy, tid in zip(boxes.xyxy, boxes.tracker_id, strict=True):
            i = index.get(int(tid)) if tid != NO_TRACK else None
            if i is not None:
                self._tracks.xyxy[i] = xyxy

    def reset(self) -> AssignmentEvents:
        """End every track (ids keep counting up, so they are never reused); returns the events."""
        gone = [*self._tracks.tracker_id.tolist(), *self._lost.tracker_id.tolist()]
        self._events = AssignmentEvents(new=[], ended=gone)
        self._tracks = Detections.empty()
        self._lost, self._lost_age = Detections.empty(), np.empty((0,), np.int64)
        self._age = self._hits = self._misses = np.empty((0,), np.int64)
        return self._events
