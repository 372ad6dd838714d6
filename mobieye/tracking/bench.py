"""Micro-benchmark of FlowTracker.step on real frames: ``python -m mobieye.tracking.bench``."""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np

from mobieye.detections import Detections
from mobieye.runtime import default_data_dir
from mobieye.stats import percentile
from mobieye.tracking.flow import FlowConfig, FlowTracker, GrayFrame


def default_video_path() -> Path:
    """TUD-Stadtmitte from the shared test data ($MOBIEYE_DATA_DIR, else ../shared/data)."""
    return default_data_dir() / "videos" / "TUD-Stadtmitte.mp4"


def read_gray_frames(path: str | os.PathLike[str], limit: int | None = None) -> list[GrayFrame]:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise FileNotFoundError(f"cannot open video {path}")
    frames: list[GrayFrame] = []
    try:
        while limit is None or len(frames) < limit:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(np.asarray(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), dtype=np.uint8))
    finally:
        cap.release()
    return frames


def spread_boxes(n: int, width: int, height: int) -> Detections:
    """n person-sized boxes laid out on a grid over the whole frame."""
    cols = max(1, int(np.ceil(np.sqrt(n * width / height))))
    rows = max(1, int(np.ceil(n / cols)))
    cw, ch = width / cols, height / rows
    bw, bh = min(60.0, 0.8 * cw), min(150.0, 0.8 * ch)
    r, c = np.divmod(np.arange(n), cols)
    x0 = c * cw + 0.5 * (cw - bw)
    y0 = r * ch + 0.5 * (ch - bh)
    xyxy = np.stack([x0, y0, x0 + bw, y0 + bh], axis=1).astype(np.float32)
    return Detections(
        xyxy,
        np.ones(n, dtype=np.float32),
        np.zeros(n, dtype=np.int64),
        np.arange(n, dtype=np.int64),
    )


def bench_flow(
    n_boxes: int = 20,
    frames: int = 150,
    video_path: str | os.PathLike[str] | None = None,
    config: FlowConfig | None = None,
    warmup: int = 5,
) -> dict[str, float]:
    """Time FlowTracker.step with n_boxes boxes over consecutive real frames.

    The boxes are fed back each step, as in the pipeline. Frames are decoded and converted to
    gray beforehand so only the step is timed. Returns milliseconds per step.
    """
    path = default_video_path() if video_path is None else Path(video_path)
    grays = read_gray_frames(path, limit=frames + 1)
    if len(grays) < warmup + 3:
        raise ValueError(f"{path}: too few frames to benchmark ({len(grays)})")
    h, w = grays[0].shape
    tracker = FlowTracker(config)
    tracker.reset(grays[0])
    boxes = spread_boxes(n_boxes, w, h)
    times: list[float] = []
    quality: list[float] = []
    for gray in grays[1:]:
        t0 = time.perf_counter()
        boxes, q = tracker.step(gray, boxes)
        times.append((time.perf_counter() - t0) * 1e3)
        quality.append(q.mean)
    ms = np.asarray(times[warmup:])
    return {
        "n_boxes": float(n_boxes),
        "frames": float(ms.size),
        "width": float(w),
        "height": float(h),
        "median_ms": float(np.median(ms)),
        "p95_ms": percentile(ms, 95) or 0.0,
        "mean_ms": float(ms.mean()),
        "mean_quality": float(np.mean(quality[warmup:])),
    }


def main() -> None:
    for n in (5, 20):
        r = bench_flow(n_boxes=n)
        print(
            f"{n:3d} boxes on {int(r['width'])}x{int(r['height'])}: median {r['median_ms']:.2f} ms"
            f"  p95 {r['p95_ms']:.2f} ms  (quality {r['mean_quality']:.2f}, cv2 threads"
            f" {cv2.getNumThreads()})"
        )


if __name__ == "__main__":
    main()
