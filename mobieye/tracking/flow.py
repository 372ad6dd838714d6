"""Sparse optical-flow box tracker (MedianFlow-style) for the frames between keyframes.

Every box gets a fixed grid of points, reseeded each step (no feature detection: it costs more
than the flow and a grid is good enough on people and cars). The points of all boxes go through
one batched pyramidal Lucas-Kanade call, plus one backward call for the forward-backward check.
A box moves by the median displacement of its valid points and scales by the median ratio of
their pairwise distances, both robust to the background points a grid inevitably catches.

Pure computation: no I/O, no threads. Frames are 8-bit grayscale, boxes are pixel xyxy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
import numpy.typing as npt

from mobieye.detections import Detections, FloatArray

GrayFrame = npt.NDArray[np.uint8]
BoolArray = npt.NDArray[np.bool_]
IndexArray = npt.NDArray[np.intp]


@dataclass(frozen=True, slots=True)
class FlowConfig:
    """Knobs of the flow tracker. The defaults are tuned on the TUD clips for speed (see bench)."""

    grid: int = 4  # 4x4 points: as accurate as 5x5 on the TUD clips, 35% cheaper
    """Points per box side: grid x grid points per box."""
    grid_margin: float = 0.15
    """Fraction of the box width/height left empty at each edge: edges are mostly background."""
    flow_width: int = 320
    """Frames are downscaled to this width for the flow (never upscaled)."""
    win_size: int = 11
    """LK window side in flow pixels."""
    max_level: int = 2
    """LK pyramid levels above the base: 2 covers ~30 px/frame of motion at the flow scale."""
    lk_iters: int = 10
    lk_eps: float = 0.03
    fb_check: bool = False
    """Track back and drop points that do not return home (MedianFlow's forward-backward check).
    Off by default: against the oracle over 6- and 12-frame intervals it changed F1 by -0.01 to
    +0.04 on the four shared clips (the medians already reject stray points) and cost 35% of a
    step, the worker's largest per-frame stage."""
    fb_max_error: float = 1.0
    """Forward-backward error limit, in flow pixels."""
    min_valid_points: int = 4
    """A box with fewer valid points stays put (quality 0): a median of fewer is noise."""
    max_scale_step: float = 1.1
    """Per-frame scale change is clamped to [1/max, max]: real objects do not zoom faster."""

    def __post_init__(self) -> None:
        if self.grid < 2:
            raise ValueError("grid must be >= 2 (scale needs point pairs)")
        if not 0.0 <= self.grid_margin < 0.5:
            raise ValueError("grid_margin must be in [0, 0.5)")
        if self.flow_width < 16 or self.win_size < 3 or self.max_level < 0:
            raise ValueError("flow_width >= 16, win_size >= 3 and max_level >= 0 required")
        if self.max_scale_step < 1.0:
            raise ValueError("max_scale_step must be >= 1")
        if self.min_valid_points < 1:
            raise ValueError("min_valid_points must be >= 1")


@dataclass(frozen=True, slots=True, eq=False)
class TrackQuality:
    """How well one flow step went: per box, the fraction of its points that tracked validly
    (0 for a box that had too few and was left in place), and their mean (1.0 with no boxes:
    nothing was lost)."""

    per_box: FloatArray
    mean: float

    @classmethod
    def perfect(cls, n: int) -> TrackQuality:
        return cls(np.ones((n,), dtype=np.float32), 1.0)


@lru_cache(maxsize=8)
def _grid_layout(grid: int, margin: float) -> tuple[FloatArray, IndexArray, IndexArray]:
    """Point positions as fractions of the box, and the index pairs used for the scale."""
    t = np.linspace(margin, 1.0 - margin, grid, dtype=np.float32)
    gx, gy = np.meshgrid(t, t)
    frac = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)
    frac.setflags(write=False)
    i, j = np.triu_indices(grid * grid, k=1)
    return frac, i.astype(np.intp), j.astype(np.intp)


def _masked_median(values: FloatArray, mask: BoolArray) -> FloatArray:
    """Row-wise median over the masked entries of a (rows, k) array; NaN for an empty row.

    Vectorised over rows with a sort: np.nanmedian is several times slower at these sizes.
    """
    rows, k = values.shape
    if k == 0:
        return np.full((rows,), np.nan, dtype=np.float32)
    v = np.where(mask, values, np.inf)
    v.sort(axis=1)
    count = mask.sum(axis=1)
    lo = np.clip((count - 1) // 2, 0, k - 1)
    hi = np.clip(count // 2, 0, k - 1)
    r = np.arange(rows)
    med = 0.5 * (v[r, lo] + v[r, hi])
    return np.where(count > 0, med, np.nan).astype(np.float32)


class _FlowFrame:
    """One frame at flow resolution.

    The LK pyramids cannot be built once per frame and reused: OpenCV's Python binding of
    calcOpticalFlowPyrLK takes only single images (a pyramid list from buildOpticalFlowPyramid
    is rejected), so each LK call rebuilds them; at 320 px that is a small share of a step.
    """

    __slots__ = ("gray", "scale_x", "scale_y", "small")

    def __init__(self, gray: GrayFrame, config: FlowConfig) -> None:
        if gray.ndim != 2 or gray.dtype != np.uint8:
            raise ValueError(f"expected an HxW uint8 gray frame, got {gray.dtype} {gray.shape}")
        self.gray = gray
        h, w = gray.shape
        if w > config.flow_width:
            fw = config.flow_width
            fh = max(1, round(h * fw / w))
            # INTER_AREA averages instead of skipping pixels: no aliasing for LK to latch onto.
            small = cv2.resize(gray, (fw, fh), interpolation=cv2.INTER_AREA)
            self.small: GrayFrame = np.asarray(small, dtype=np.uint8)
        else:
            fw, fh = w, h
            self.small = np.ascontiguousarray(gray)
        self.scale_x = fw / w
        self.scale_y = fh / h

    @property
    def shape(self) -> tuple[int, int]:
        h, w = self.gray.shape
        return h, w


def _lk(
    img0: GrayFrame, img1: GrayFrame, pts: FloatArray, config: FlowConfig
) -> tuple[FloatArray, BoolArray]:
    """One batched pyramidal LK call: (n,1,2) points on img0 -> their positions on img1, valid."""
    win = (config.win_size, config.win_size)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, config.lk_iters, config.lk_eps)
    # nextPts is an output buffer here (no OPTFLOW_USE_INITIAL_FLOW): its contents are ignored.
    nxt, status, _ = cv2.calcOpticalFlowPyrLK(
        img0, img1, pts, np.empty_like(pts), winSize=win, maxLevel=config.max_level,
        criteria=criteria,
    )  # fmt: skip
    p = np.asarray(nxt, dtype=np.float32).reshape(pts.shape)
    return p, np.asarray(status).reshape(-1).astype(bool)


def _flow_boxes(
    prev: _FlowFrame, nxt: _FlowFrame, xyxy: FloatArray, config: FlowConfig
) -> tuple[FloatArray, FloatArray]:
    """Move xyxy boxes (pixels, on prev) to nxt. Returns new boxes (unclipped) and per-box quality.

    The one core shared by FlowTracker.step and propagate.
    """
    n = xyxy.shape[0]
    if n == 0:
        return xyxy.copy(), np.zeros((0,), dtype=np.float32)
    frac, pi, pj = _grid_layout(config.grid, config.grid_margin)
    k = frac.shape[0]
    sx, sy = prev.scale_x, prev.scale_y
    scale = np.array([sx, sy, sx, sy], dtype=np.float32)
    boxes = xyxy.astype(np.float32) * scale
    tl = boxes[:, None, :2]
    wh = boxes[:, None, 2:] - tl
    p0 = (tl + frac[None] * wh).reshape(-1, 1, 2)
    fh, fw = prev.small.shape
    # Points of boxes hanging over the border are pulled in: LK cannot track outside the image.
    np.clip(p0[..., 0], 0, fw - 1, out=p0[..., 0])
    np.clip(p0[..., 1], 0, fh - 1, out=p0[..., 1])

    p1, valid = _lk(prev.small, nxt.small, p0, config)
    if config.fb_check:
        p0b, valid_b = _lk(nxt.small, prev.small, p1, config)
        fb = np.linalg.norm((p0b - p0).reshape(-1, 2), axis=1)
        valid &= valid_b & (fb <= config.fb_max_error)

    p0 = p0.reshape(n, k, 2)
    p1 = p1.reshape(n, k, 2)
    valid = valid.reshape(n, k)
    count = valid.sum(axis=1)
    ok = count >= config.min_valid_points

    d = p1 - p0
    # dx and dy medians in one vectorised call by stacking them as rows.
    med = _masked_median(np.concatenate([d[..., 0], d[..., 1]]), np.concatenate([valid, valid]))
    dx, dy = med[:n], med[n:]

    d_old = np.linalg.norm(p0[:, pi] - p0[:, pj], axis=2)
    d_new = np.linalg.norm(p1[:, pi] - p1[:, pj], axis=2)
    pair_ok = valid[:, pi] & valid[:, pj] & (d_old > 1e-3)
    ratio = np.divide(d_new, d_old, out=np.ones_like(d_new), where=pair_ok)
    s = _masked_median(ratio, pair_ok)
    s = np.clip(np.nan_to_num(s, nan=1.0), 1.0 / config.max_scale_step, config.max_scale_step)

    cx = 0.5 * (boxes[:, 0] + boxes[:, 2]) + dx
    cy = 0.5 * (boxes[:, 1] + boxes[:, 3]) + dy
    hw = 0.5 * (boxes[:, 2] - boxes[:, 0]) * s
    hh = 0.5 * (boxes[:, 3] - boxes[:, 1]) * s
    moved = np.stack([cx - hw, cy - hh, cx + hw, cy + hh], axis=1) / scale
    out = np.where(ok[:, None], moved, xyxy).astype(np.float32)
    quality = np.where(ok, count / k, 0.0).astype(np.float32)
    return out, quality


def _with_boxes(boxes: Detections, xyxy: FloatArray, width: int, height: int) -> Detections:
    """Copy of boxes with new coordinates clipped to the frame. Unlike Detections.clip nothing is
    dropped: callers rely on the output lining up with the input."""
    xy = xyxy.astype(np.float32, copy=True)
    xy[:, [0, 2]] = np.clip(xy[:, [0, 2]], 0, width)
    xy[:, [1, 3]] = np.clip(xy[:, [1, 3]], 0, height)
    return Detections(xy, boxes.confidence.copy(), boxes.class_id.copy(), boxes.tracker_id.copy())


class FlowTracker:
    """Moves boxes from the previous frame it was given to the current one.

    The tracker keeps a reference to the last frame (not a copy): do not write into a frame after
    handing it over.
    """

    def __init__(self, config: FlowConfig | None = None) -> None:
        self.config = config or FlowConfig()
        self._prev: _FlowFrame | None = None

    @property
    def prev_gray(self) -> GrayFrame | None:
        """The reference frame the next step moves boxes from (None before the first frame)."""
        return None if self._prev is None else self._prev.gray

    def reset(self, gray: GrayFrame) -> None:
        """Make gray the reference frame without moving anything (e.g. on a keyframe)."""
        self._prev = _FlowFrame(gray, self.config)

    def clear(self) -> None:
        """Forget the reference frame: the next step behaves like the first."""
        self._prev = None

    def step(self, gray: GrayFrame, boxes: Detections) -> tuple[Detections, TrackQuality]:
        """Move boxes (on the previous frame) to gray; returns them in the same order, with the
        same class, confidence and track ids, clipped to the frame (never dropped).

        The first call, and a call whose frame size differs from the previous one, only store the
        frame and return the boxes unchanged with quality 1.
        """
        frame = _FlowFrame(gray, self.config)
        prev, self._prev = self._prev, frame
        h, w = frame.shape
        if prev is None or prev.shape != frame.shape:
            return boxes.copy(), TrackQuality.perfect(len(boxes))
        if len(boxes) == 0:
            return boxes.copy(), TrackQuality.perfect(0)
        xyxy, quality = _flow_boxes(prev, frame, boxes.xyxy, self.config)
        return _with_boxes(boxes, xyxy, w, h), TrackQuality(quality, float(quality.mean()))


def propagate(
    grays: Sequence[GrayFrame], boxes: Detections, config: FlowConfig | None = None
) -> Detections:
    """Fast-forward boxes detected on grays[0] through grays[1:], frame to frame.

    For a detection that comes back late: it is moved to the newest frame before use.
    """
    tracker = FlowTracker(config)
    if not grays:
        return boxes.copy()
    tracker.reset(grays[0])
    out = boxes.copy()
    for gray in grays[1:]:
        out, _ = tracker.step(gray, out)
    return out
