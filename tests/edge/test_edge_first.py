"""Edge-first tracking on real frames: what it shows, when it asks for a still, how a late
cloud answer is fast-forwarded and how ids carry over (no sockets; the cloud's answers are
the clip's ground-truth boxes)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent.edge_first import EdgeFirst
from mobieye.config import KeyframeConfig
from mobieye.detections import box_iou
from mobieye.messages import Box, Result, Timings
from mobieye.stills import decode_still, unpack_still


@pytest.fixture(scope="module")
def clip(data_dir: Path) -> tuple[list[np.ndarray], np.ndarray]:
    cap = cv2.VideoCapture(str(data_dir / "videos" / "TUD-Campus.mp4"))
    images = []
    for _ in range(30):
        ok, image = cap.read()
        assert ok
        images.append(image)
    cap.release()
    gt = np.loadtxt(data_dir / "annotations" / "TUD-Campus" / "gt" / "gt.txt", delimiter=",")
    return images, gt


def gray(image: np.ndarray) -> np.ndarray:
    return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), np.uint8)


def truth(gt: np.ndarray, seq: int, w: int, h: int, source: str = "detect") -> Result:
    rows = gt[gt[:, 0] == seq + 1]
    boxes = [
        Box(xyxy=(r[2] / w, r[3] / h, (r[2] + r[4]) / w, (r[3] + r[5]) / h), cls=0,
            label="person", score=0.9, track_id=-1)
        for r in rows
    ]  # fmt: skip
    return Result(seq=seq, pts=0, source=source, model="oracle", width=w, height=h, boxes=boxes,
                  timings=Timings(detect_ms=20.0))  # fmt: skip


def test_first_frame_is_a_still_then_late_answers_are_moved_to_the_newest_frame(
    clip: tuple[list[np.ndarray], np.ndarray],
) -> None:
    images, gt = clip
    h, w = images[0].shape[:2]
    ef = EdgeFirst(KeyframeConfig(interval=10, max_interval=10, max_age_s=60, max_age_cap_s=60),
                   0.85, 100.0, None)  # fmt: skip
    first = ef.step(0, gray(images[0]), images[0], 0.0, online=True)
    assert first.still is not None and first.reason == "first" and first.base == "none"
    header, data = unpack_still(first.still)
    assert header.seq == 0 and decode_still(header, data, 10**7).shape[1] == w
    ef.sent(0, 0.0, 0.0, len(first.still))
    # The answer comes three frames later; meanwhile one still at a time: no other goes.
    for seq in (1, 2):
        assert ef.step(seq, gray(images[seq]), images[seq], seq * 0.04, True).still is None
    assert ef.on_cloud(truth(gt, 0, w, h), 0.12) == pytest.approx(120.0)
    shown = ef.step(3, gray(images[3]), images[3], 0.12, True)
    assert shown.base == "cloud" and len(shown.boxes) == len(truth(gt, 0, w, h).boxes)
    # Fast-forwarded: closer to the people on frame 3 than their boxes on frame 0 were.
    at3 = truth(gt, 3, w, h)
    ref = np.array([b.xyxy for b in at3.boxes], np.float32) * [w, h, w, h]
    moved = box_iou(shown.boxes.xyxy, ref).max(axis=1).mean()
    unmoved = box_iou(np.array([b.xyxy for b in truth(gt, 0, w, h).boxes], np.float32)
                      * [w, h, w, h], ref).max(axis=1).mean()  # fmt: skip
    assert moved >= unmoved - 0.01
    ids = set(shown.boxes.tracker_id.tolist())
    assert -1 not in ids and len(ids) == len(shown.boxes)
    # The next answer (frame 10, the interval) keeps the same people's ids.
    for seq in range(4, 10):
        ef.step(seq, gray(images[seq]), images[seq], seq * 0.04, True)
    keyframe = ef.step(10, gray(images[10]), images[10], 0.4, True)
    assert keyframe.still is not None and keyframe.reason == "interval"
    ef.sent(10, 0.4, 0.4, len(keyframe.still))
    ef.on_cloud(truth(gt, 10, w, h), 0.45)
    after = ef.step(11, gray(images[11]), images[11], 0.45, True)
    assert len(ids & set(after.boxes.tracker_id.tolist())) >= len(ids) - 1


def test_offline_budget_and_device_model(clip: tuple[list[np.ndarray], np.ndarray]) -> None:
    images, gt = clip
    h, w = images[0].shape[:2]
    ef = EdgeFirst(KeyframeConfig(), 0.85, 100.0, uplink_kbps=1.0)
    assert ef.step(0, gray(images[0]), images[0], 0.0, online=False).reason == "offline"
    # The cloud is silent: the device model's boxes are shown (ids of the edge's own).
    ef.on_local(truth(gt, 0, w, h, "local"), 0.01)
    shown = ef.step(1, gray(images[1]), images[1], 0.04, online=False)
    assert shown.base == "local" and len(shown.boxes) > 0
    # Online with a 1 kbps budget: the first still goes, the next keyframes are refused.
    first = ef.step(2, gray(images[2]), images[2], 0.08, online=True)
    assert first.still is not None
    ef.sent(2, 0.08, 0.08, len(first.still))
    ef.on_cloud(truth(gt, 2, w, h), 0.1)
    reasons = [ef.step(s, gray(images[s]), images[s], s * 0.04, True).reason for s in range(3, 30)]
    assert "budget" in reasons and ef.budget.sent == 1
