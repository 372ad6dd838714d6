"""Association of a keyframe's detections with the tracks carried over from earlier keyframes.

IoU between the (flow-moved) track boxes and the new detections, class-aware, solved as an
optimal assignment. Matched detections inherit the track id; the rest start new tracks; tracks
left unmatched survive a few keyframes (a detector misses objects now and then) and then end.
Pure computation: no I/O, no threads.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from scipy.optimize import linear_sum_assignment

from mobieye.detections import NO_TRACK, Detections, FloatArray, box_iou


@dataclass(frozen=True, slots=True)
class AssignmentEvents:
    """Track ids that started / ended on the last update, for the object events published later."""

    new: list[int] = field(default_factory=list)
    ended: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True, eq=False)  # holds an array: compared by identity only
class Track:
    """One object followed across keyframes."""

    track_id: int
    xyxy: FloatArray
    """Current box, pixels: from the last detection, or the last flow step after it."""
    class_id: int
    score: float
    age: int = 1
    """Keyframe updates seen since creation, the creating one included."""
    hits: int = 1
    """Keyframes on which a detection matched it, the creating one included."""
    misses: int = 0
    """Consecutive keyframes without a matching detection."""


class TrackAssigner:
    """Gives detections persistent track ids, one keyframe at a time."""

    def __init__(
        self,
        iou_threshold: float = 0.3,
        max_misses: int = 1,
        *,
        class_aware: bool = True,
        first_id: int = 1,
    ) -> None:
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError("iou_threshold must be in (0, 1]")
        if max_misses < 0:
            raise ValueError("max_misses must be >= 0")
        self.iou_threshold = iou_threshold
        self.max_misses = max_misses
        self.class_aware = class_aware
        self._next_id = first_id
        self._tracks: list[Track] = []
        self._events = AssignmentEvents()

    @property
    def tracks(self) -> Detections:
        """All live tracks, missed ones included, with their track ids."""
        if not self._tracks:
            return Detections.empty()
        return Detections(
            np.stack([t.xyxy for t in self._tracks]),
            np.array([t.score for t in self._tracks], dtype=np.float32),
            np.array([t.class_id for t in self._tracks], dtype=np.int64),
            np.array([t.track_id for t in self._tracks], dtype=np.int64),
        )

    @property
    def track_states(self) -> tuple[Track, ...]:
        """The live tracks with their bookkeeping (age, hits, misses); immutable snapshots."""
        return tuple(self._tracks)

    @property
    def events(self) -> AssignmentEvents:
        """Which track ids started and ended on the last update (or reset)."""
        return self._events

    def __len__(self) -> int:
        return len(self._tracks)

    def update(self, detections: Detections) -> Detections:
        """Assign track ids to one keyframe's detections; returns them in the same order."""
        out = detections.copy()
        n_trk, n_det = len(self._tracks), len(detections)
        det_to_trk = np.full((n_det,), -1, dtype=np.int64)
        if n_trk and n_det:
            current = self.tracks
            iou = box_iou(current.xyxy, detections.xyxy)
            if self.class_aware:
                iou[current.class_id[:, None] != detections.class_id[None, :]] = 0.0
            # Pairs under the threshold are zeroed so they add nothing to the optimum and are
            # dropped below; the assignment then maximises IoU among admissible pairs only.
            iou[iou < self.iou_threshold] = 0.0
            rows, cols = linear_sum_assignment(iou, maximize=True)
            keep = iou[rows, cols] > 0.0
            det_to_trk[cols[keep]] = rows[keep]

        matched = {int(t): int(d) for d, t in enumerate(det_to_trk) if t >= 0}
        survivors: list[Track] = []
        ended: list[int] = []
        for i, trk in enumerate(self._tracks):
            d = matched.get(i)
            if d is not None:
                survivors.append(
                    replace(
                        trk,
                        xyxy=detections.xyxy[d].copy(),
                        class_id=int(detections.class_id[d]),
                        score=float(detections.confidence[d]),
                        age=trk.age + 1,
                        hits=trk.hits + 1,
                        misses=0,
                    )
                )
                out.tracker_id[d] = trk.track_id
            elif trk.misses + 1 > self.max_misses:
                ended.append(trk.track_id)
            else:
                survivors.append(replace(trk, age=trk.age + 1, misses=trk.misses + 1))

        new: list[int] = []
        for j in np.flatnonzero(det_to_trk < 0):
            tid = self._next_id
            self._next_id += 1
            survivors.append(
                Track(
                    tid,
                    detections.xyxy[j].copy(),
                    int(detections.class_id[j]),
                    float(detections.confidence[j]),
                )
            )
            out.tracker_id[j] = tid
            new.append(tid)

        self._tracks = survivors
        self._events = AssignmentEvents(new=new, ended=ended)
        return out

    def set_tracked(self, boxes: Detections) -> None:
        """Replace track boxes with flow-moved ones, matched by tracker id.

        Boxes whose id is not a live track (-1, or a track that ended meanwhile) are ignored;
        tracks with no box keep theirs.
        """
        index = {t.track_id: i for i, t in enumerate(self._tracks)}
        for xyxy, tid in zip(boxes.xyxy, boxes.tracker_id, strict=True):
            i = index.get(int(tid)) if tid != NO_TRACK else None
            if i is not None:
                self._tracks[i] = replace(self._tracks[i], xyxy=xyxy.astype(np.float32))

    def reset(self) -> AssignmentEvents:
        """End every track (ids keep counting up, so they are never reused); returns the events."""
        self._events = AssignmentEvents(new=[], ended=[t.track_id for t in self._tracks])
        self._tracks = []
        return self._events
