"""On-device fallback: the newest result's boxes, moved by the edge's tracker to a late frame."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge_agent.fallback import OnDeviceFallback
from mobieye.detections import box_iou
from mobieye.messages import Box, Result, Timings


def test_late_frame_gets_the_last_boxes_moved_by_flow(data_dir: Path) -> None:
    cap = cv2.VideoCapture(str(data_dir / "videos" / "TUD-Campus.mp4"))
    grays = []
    for _ in range(8):
        ok, image = cap.read()
        assert ok
        grays.append(np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), np.uint8))
    cap.release()
    gt = np.loadtxt(data_dir / "annotations" / "TUD-Campus" / "gt" / "gt.txt", delimiter=",")
    ids = set(gt[gt[:, 0] == 1, 1]) & set(gt[gt[:, 0] == 8, 1])

    def boxes(frame: int) -> np.ndarray:
        rows = sorted((r for r in gt if r[0] == frame and r[1] in ids), key=lambda r: r[1])
        return np.array([[r[2], r[3], r[2] + r[4], r[3] + r[5]] for r in rows], np.float32)

    h, w = grays[0].shape
    scale = np.array([w, h, w, h], np.float32)
    first = Result(
        seq=0, pts=0, source="detect", model="m", width=w, height=h,
        boxes=[Box(xyxy=tuple(b / scale), cls=0, label="person", score=0.9, track_id=i)
               for i, b in enumerate(boxes(1))],
        timings=Timings(),
    )  # fmt: skip
    fallback = OnDeviceFallback()
    for seq, gray in enumerate(grays):
        fallback.on_sent(seq, gray)
    fallback.on_result(first)
    shown = fallback.boxes_for(7)
    assert shown is not None and shown.seq == 7 and len(shown.boxes) == len(ids)
    moved = np.array([b.xyxy for b in shown.boxes], np.float32) * scale
    truth = boxes(8)
    iou_moved = np.diag(box_iou(moved, truth)).mean()
    iou_stale = np.diag(box_iou(boxes(1), truth)).mean()
    assert iou_moved > iou_stale + 0.05, (iou_moved, iou_stale)
    assert fallback.frames == 1
