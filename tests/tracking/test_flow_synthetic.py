"""FlowTracker on a synthetic textured scene moved by a known affine motion."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import pytest

from mobieye.detections import Detections
from mobieye.tracking import FlowConfig, FlowTracker, TrackQuality, propagate
from mobieye.tracking.flow import GrayFrame

H, W = 480, 640


def texture(seed: int = 0) -> GrayFrame:
    """Blurred noise: corners everywhere at several scales, like a busy street, nothing periodic."""
    rng = np.random.default_rng(seed)
    fine = cv2.GaussianBlur(rng.uniform(0, 255, (H, W)).astype(np.float32), (0, 0), 2.0)
    coarse = cv2.GaussianBlur(rng.uniform(0, 255, (H, W)).astype(np.float32), (0, 0), 6.0)
    img = np.asarray(fine, dtype=np.float32) + 2 * np.asarray(coarse, dtype=np.float32)
    img = (img - img.min()) * (255.0 / (img.max() - img.min()))
    return np.asarray(img, dtype=np.uint8)


def warp(img: GrayFrame, dx: float, dy: float, s: float = 1.0, cx: float = W / 2, cy: float = H / 2
         ) -> GrayFrame:  # fmt: skip
    """img scaled by s about (cx, cy), then shifted by (dx, dy)."""
    m = np.array([[s, 0, cx - s * cx + dx], [0, s, cy - s * cy + dy]], dtype=np.float64)
    out = cv2.warpAffine(img, m, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return np.asarray(out, dtype=np.uint8)


def moved(xyxy: np.ndarray, dx: float, dy: float, s: float = 1.0, cx: float = W / 2,
          cy: float = H / 2) -> np.ndarray:  # fmt: skip
    c = np.array([cx, cy, cx, cy], dtype=np.float32)
    return (c + s * (xyxy - c) + np.array([dx, dy, dx, dy], dtype=np.float32)).astype(np.float32)


def boxes(n: int, seed: int = 1) -> Detections:
    """n boxes of 60-120 x 80-200 px well inside the frame, with distinct metadata."""
    rng = np.random.default_rng(seed)
    wh = rng.uniform([60, 80], [120, 200], (n, 2))
    tl = rng.uniform([60, 60], [W - 60 - 120, H - 60 - 200], (n, 2))
    xyxy = np.concatenate([tl, tl + wh], axis=1).astype(np.float32)
    return Detections(
        xyxy,
        rng.uniform(0.3, 1.0, n).astype(np.float32),
        rng.integers(0, 5, n).astype(np.int64),
        np.arange(100, 100 + n, dtype=np.int64),
    )


@pytest.mark.parametrize(
    ("dx", "dy", "s"),
    [(3.0, -2.0, 1.0), (7.5, 4.25, 1.0), (-12.0, 9.0, 1.0), (2.0, 1.0, 1.05), (-3.0, 2.0, 0.95)],
)
def test_boxes_follow_known_motion(dx: float, dy: float, s: float) -> None:
    img = texture()
    det = boxes(12)
    tracker = FlowTracker()
    first, q0 = tracker.step(img, det)
    np.testing.assert_array_equal(first.xyxy, det.xyxy)  # first call only stores the frame
    assert q0.mean == 1.0
    out, q = tracker.step(warp(img, dx, dy, s), det)
    np.testing.assert_allclose(out.xyxy, moved(det.xyxy, dx, dy, s), atol=1.0)
    np.testing.assert_array_equal(out.tracker_id, det.tracker_id)
    np.testing.assert_array_equal(out.class_id, det.class_id)
    np.testing.assert_array_equal(out.confidence, det.confidence)
    assert q.per_box.shape == (12,)
    assert q.per_box.min() > 0.8
    assert q.mean == pytest.approx(float(q.per_box.mean()))


def test_fb_off_and_full_resolution_also_follow() -> None:
    img = texture()
    det = boxes(6)
    for config in (FlowConfig(fb_check=False), FlowConfig(flow_width=W), FlowConfig(grid=7)):
        tracker = FlowTracker(config)
        tracker.reset(img)
        out, _ = tracker.step(warp(img, 5.0, -3.0), det)
        np.testing.assert_allclose(out.xyxy, moved(det.xyxy, 5.0, -3.0), atol=1.0)


class CountingLK:
    def __init__(self, real: Callable[..., Any]) -> None:
        self.real = real
        self.points: list[int] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.points.append(int(np.asarray(args[2]).reshape(-1, 2).shape[0]))
        return self.real(*args, **kwargs)


@pytest.mark.parametrize("fb_check", [True, False])
@pytest.mark.parametrize("n", [1, 5, 40])
def test_one_batched_lk_call_per_direction(
    monkeypatch: pytest.MonkeyPatch, n: int, fb_check: bool
) -> None:
    counter = CountingLK(cv2.calcOpticalFlowPyrLK)
    monkeypatch.setattr(cv2, "calcOpticalFlowPyrLK", counter)
    config = FlowConfig(fb_check=fb_check)
    img = texture()
    tracker = FlowTracker(config)
    tracker.reset(img)
    tracker.step(warp(img, 2.0, 2.0), boxes(n))
    per_box = config.grid * config.grid
    assert counter.points == [n * per_box] * (2 if fb_check else 1)


def test_no_lk_call_without_boxes(monkeypatch: pytest.MonkeyPatch) -> None:
    counter = CountingLK(cv2.calcOpticalFlowPyrLK)
    monkeypatch.setattr(cv2, "calcOpticalFlowPyrLK", counter)
    tracker = FlowTracker()
    img = texture()
    tracker.reset(img)
    out, q = tracker.step(warp(img, 1.0, 1.0), Detections.empty())
    assert len(out) == 0 and q.per_box.shape == (0,) and q.mean == 1.0
    assert counter.points == []


def test_featureless_box_stays_put_with_zero_quality() -> None:
    img = texture()
    img[:, : W // 2] = 128  # left half flat: LK has nothing to lock onto there
    det = Detections(
        np.array([[60, 100, 200, 300], [400, 100, 520, 300]], dtype=np.float32),
        np.ones(2, dtype=np.float32),
        np.zeros(2, dtype=np.int64),
        np.array([1, 2], dtype=np.int64),
    )
    tracker = FlowTracker()
    tracker.reset(img)
    out, q = tracker.step(warp(img, 4.0, 0.0), det)
    np.testing.assert_array_equal(out.xyxy[0], det.xyxy[0])
    assert q.per_box[0] == 0.0
    np.testing.assert_allclose(out.xyxy[1], moved(det.xyxy[1:], 4.0, 0.0)[0], atol=1.0)
    assert q.per_box[1] > 0.8
    assert q.mean == pytest.approx(float(q.per_box.mean()))


def test_output_clipped_to_frame_and_nothing_dropped() -> None:
    img = texture()
    det = Detections(
        np.array([[W - 80, 100, W - 5, 250], [100, 100, 180, 260]], dtype=np.float32),
        np.ones(2, dtype=np.float32),
        np.zeros(2, dtype=np.int64),
        np.array([7, 8], dtype=np.int64),
    )
    tracker = FlowTracker()
    tracker.reset(img)
    out, _ = tracker.step(warp(img, 10.0, 0.0), det)
    assert len(out) == 2
    assert out.xyxy[0, 2] == W
    assert out.xyxy[0, 0] == pytest.approx(W - 70, abs=1.0)
    np.testing.assert_array_equal(out.tracker_id, [7, 8])


def test_reset_prev_gray_and_size_change() -> None:
    img = texture()
    tracker = FlowTracker()
    assert tracker.prev_gray is None
    tracker.reset(img)
    assert tracker.prev_gray is img
    det = boxes(3)
    shifted = warp(img, 6.0, 0.0)
    tracker.reset(shifted)  # reference moves on without moving anything
    out, _ = tracker.step(shifted, det)
    np.testing.assert_allclose(out.xyxy, det.xyxy, atol=0.5)
    # A new frame size cannot be flowed against the old one: treated like a first frame.
    small = np.ascontiguousarray(img[:240, :320])
    out, q = tracker.step(small, det)
    np.testing.assert_array_equal(out.xyxy, det.xyxy)
    assert q.mean == 1.0 and np.array_equal(q.per_box, TrackQuality.perfect(3).per_box)
    assert tracker.prev_gray is small


def test_rejects_colour_frames() -> None:
    with pytest.raises(ValueError, match="gray"):
        FlowTracker().step(np.zeros((H, W, 3), dtype=np.uint8), boxes(1))


def test_propagate_chains_frames() -> None:
    img = texture()
    steps = [(0.0, 0.0), (3.0, 1.0), (6.0, 2.0), (9.0, 3.0), (12.0, 4.0)]
    grays = [warp(img, dx, dy) for dx, dy in steps]
    det = boxes(8)
    out = propagate(grays, det)
    np.testing.assert_allclose(out.xyxy, moved(det.xyxy, 12.0, 4.0), atol=1.0)
    np.testing.assert_array_equal(out.tracker_id, det.tracker_id)
    assert len(propagate([], det)) == len(det)


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        FlowConfig(grid=1)
    with pytest.raises(ValueError):
        FlowConfig(max_scale_step=0.9)
