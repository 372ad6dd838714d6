"""Tracking quality against MOTChallenge ground truth, with TrackEval (HOTA, CLEAR, Identity).

The bench hands over, per frame the clip played, the ground-truth people (with their ids) and
the people a mode *showed* (with their track ids): MOTA and ID switches (CLEAR), IDF1
(Identity) and HOTA come from TrackEval's own implementations over one sequence, IoU as the
similarity, the MOTChallenge way. The anchor row is ultralytics' ByteTrack run offline on the
oracle model's detections of every frame: what a good tracker makes of perfect-rate detection.

Boxes without a track id (NO_TRACK) each get an id of their own: a tracker that can't say who
is who pays for it in IDF1 and HOTA instead of being skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np

from mobieye.detections import Detections, box_iou

PERSON = 0


def _contiguous(ids_per_frame: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    """Ids renumbered 0..n-1 over the sequence (TrackEval indexes arrays by them)."""
    every = np.unique(np.concatenate(ids_per_frame)) if ids_per_frame else np.empty(0)
    lookup = {int(v): i for i, v in enumerate(every)}
    return [np.array([lookup[int(v)] for v in ids], np.int64) for ids in ids_per_frame], len(every)


def _ids(dets: Detections, fresh: list[int]) -> np.ndarray:
    ids = dets.tracker_id.astype(np.int64).copy()
    for i in np.flatnonzero(ids < 0):  # no track id: a new identity every time
        fresh[0] -= 1
        ids[i] = fresh[0]
    return ids


def mot_metrics(frames: Sequence[tuple[Detections, Detections]]) -> dict[str, float | int]:
    """``frames``: (ground truth with ids, shown boxes with track ids), people only, in the
    same coordinates. Returns mota, idf1, id_switches and hota."""
    from trackeval.metrics import CLEAR, HOTA, Identity

    fresh = [0]
    gt_ids, tr_ids, sims = [], [], []
    for gt, shown in frames:
        gt_ids.append(gt.tracker_id.astype(np.int64))
        tr_ids.append(_ids(shown, fresh))
        sims.append(box_iou(gt.xyxy, shown.xyxy) if len(gt) and len(shown) else
                    np.zeros((len(gt), len(shown))))  # fmt: skip
    gt_c, n_gt = _contiguous(gt_ids)
    tr_c, n_tr = _contiguous(tr_ids)
    data: dict[str, Any] = {
        "num_timesteps": len(frames),
        "num_gt_ids": n_gt,
        "num_tracker_ids": n_tr,
        "num_gt_dets": int(sum(len(g) for g in gt_c)),
        "num_tracker_dets": int(sum(len(t) for t in tr_c)),
        "gt_ids": gt_c,
        "tracker_ids": tr_c,
        "similarity_scores": sims,
    }
    clear = CLEAR({"PRINT_CONFIG": False}).eval_sequence(data)
    identity = Identity({"PRINT_CONFIG": False}).eval_sequence(data)
    hota = HOTA().eval_sequence(data)
    return {
        "mota": round(float(clear["MOTA"]), 4),
        "idf1": round(float(identity["IDF1"]), 4),
        "id_switches": int(clear["IDSW"]),
        "hota": round(float(np.mean(hota["HOTA"])), 4),
    }


def people(dets: Detections, min_score: float) -> Detections:
    confident = dets.confident(min_score)
    return confident[confident.class_id == PERSON]


def bytetrack_anchor(
    oracle: Sequence[Detections], gt: Sequence[Detections], fps: float, min_score: float
) -> dict[str, float | int]:
    """ultralytics' ByteTrack (its default settings) on the oracle's boxes of every frame,
    scored like the modes."""
    from ultralytics.trackers.byte_tracker import BYTETracker

    args = SimpleNamespace(
        track_high_thresh=0.25, track_low_thresh=0.1, new_track_thresh=0.25, track_buffer=30,
        match_thresh=0.8, fuse_score=True,
    )  # fmt: skip
    # ultralytics' yaml keeps a lost track 30 frames at 30 fps: a second, at the clip's rate.
    args.track_buffer = max(1, round(fps))
    tracker = BYTETracker(args)  # type: ignore[no-untyped-call]
    frames = []
    for dets, truth in zip(oracle, gt, strict=False):
        xyxy = dets.xyxy.astype(np.float32)
        xywh = np.column_stack([(xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2,
                                xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]])  # fmt: skip
        boxes = _Boxes(dets.confidence.astype(np.float32), dets.class_id.astype(np.float32), xywh)
        out = tracker.update(boxes)
        tracked = Detections.empty()
        if len(out):
            xyxy, ids = out[:, :4].astype(np.float32), out[:, 4].astype(np.int64)
            tracked = Detections(xyxy, out[:, 5], out[:, 6].astype(np.int64), ids)
        frames.append((truth, people(tracked, min_score)))
    return mot_metrics(frames)


class _Boxes:
    """What BYTETracker.update reads of ultralytics' Boxes: conf, cls, xywh, boolean indexing."""

    def __init__(self, conf: np.ndarray, cls: np.ndarray, xywh: np.ndarray) -> None:
        self.conf, self.cls, self.xywh = conf, cls, xywh

    @property
    def xyxy(self) -> np.ndarray:
        c, wh = self.xywh[:, :2], self.xywh[:, 2:]
        return np.concatenate([c - wh / 2, c + wh / 2], axis=1)

    def __len__(self) -> int:
        return len(self.conf)

    def __getitem__(self, index: Any) -> _Boxes:
        return _Boxes(self.conf[index], self.cls[index], self.xywh[index])
