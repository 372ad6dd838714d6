"""References to score against: the oracle (the most accurate model on every frame, offline)
and MOTChallenge ground truth. Boxes are kept normalised to the frame size, like results.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from mobieye.config import DetectorConfig, LadderModel
from mobieye.detections import Detections
from mobieye.detector import UltralyticsDetector
from mobieye.errors import MobiEyeError
from mobieye.runtime import CACHE_DIR

log = logging.getLogger(__name__)

PERSON = 0  # COCO class id
ORACLE_FORMAT = 2  # bump when the cached arrays change


def video_info(path: Path) -> tuple[int, int, int, float]:
    """(frames, width, height, fps) of a clip, or an error naming it."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise MobiEyeError(f"cannot open video {path}")
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    finally:
        cap.release()
    if n <= 0:
        raise MobiEyeError(f"video {path} has no frames")
    return n, w, h, fps


def _cache_key(video: Path, model: LadderModel, detector: DetectorConfig) -> str:
    stat, mstat = video.stat(), Path(model.path).stat()
    raw = json.dumps(
        [
            ORACLE_FORMAT,
            str(video.resolve()), stat.st_size, stat.st_mtime,
            str(Path(model.path).resolve()), mstat.st_size, model.imgsz,
            detector.conf, detector.iou, detector.max_det,
        ]
    )  # fmt: skip
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def oracle_boxes(
    video: Path,
    model: LadderModel,
    detector: DetectorConfig,
    progress: Callable[[str], None] | None = None,
) -> list[Detections]:
    """The model on every frame of the clip; computed once, then read from the cache."""
    cache = CACHE_DIR / "oracle" / f"{_cache_key(video, model, detector)}.npz"
    if cache.exists():
        with np.load(cache) as data:
            counts, xyxy, cls, score = (data[k] for k in ("counts", "xyxy", "class_id", "score"))
        splits = np.cumsum(counts)[:-1]
        return [
            Detections(b, s, c)
            for b, c, s in zip(
                np.split(xyxy, splits), np.split(cls, splits), np.split(score, splits), strict=True
            )
        ]
    cfg = detector.model_copy(update={"model": model.path, "imgsz": model.imgsz, "threads": 2})
    det = UltralyticsDetector(cfg)
    det.load()
    cap = cv2.VideoCapture(str(video))
    out: list[Detections] = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        h, w = image.shape[:2]
        found = det.detect([np.asarray(image, np.uint8)])[0]
        out.append(found.normalized(w, h))
        if progress and len(out) % 50 == 0:
            progress(f"oracle: {len(out)} frames")
    cap.release()
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez_compressed(
        tmp,
        counts=np.array([len(f.xyxy) for f in out], np.int64),
        xyxy=np.concatenate([f.xyxy for f in out]).reshape(-1, 4),
        class_id=np.concatenate([f.class_id for f in out]),
        score=np.concatenate([f.confidence for f in out]),
    )
    tmp.replace(cache)
    return out


def load_mot_gt(path: Path, frames: int, width: int, height: int) -> list[Detections]:
    """MOTChallenge gt.txt (frame,id,x,y,w,h,...; 1-based frames) as person boxes per frame.

    Refuses ground truth whose frames run past the clip: it belongs to another video.
    """
    try:
        rows = np.loadtxt(path, delimiter=",", ndmin=2)
    except (OSError, ValueError) as exc:
        raise MobiEyeError(f"cannot read ground truth {path}: {exc}") from exc
    if rows.shape[1] < 6:
        raise MobiEyeError(f"ground truth {path} needs frame,id,x,y,w,h columns")
    last = int(rows[:, 0].max())
    if last > frames or last < frames * 0.5:
        raise MobiEyeError(
            f"ground truth {path} covers {last} frames but the clip has {frames}: "
            "is it the ground truth of another video?"
        )
    scale = np.array([width, height, width, height], np.float32)
    per_frame: list[Detections] = []
    for f in range(1, frames + 1):
        r = rows[rows[:, 0] == f]
        if rows.shape[1] >= 7:
            r = r[r[:, 6] != 0]  # flag 0: ignore region
        xyxy = np.stack([r[:, 2], r[:, 3], r[:, 2] + r[:, 4], r[:, 3] + r[:, 5]], axis=1)
        per_frame.append(
            Detections(
                (xyxy.astype(np.float32) / scale).reshape(-1, 4),
                np.ones(len(r), np.float32),
                np.full(len(r), PERSON, np.int64),
                r[:, 1].astype(np.int64),  # the person's id: tracking metrics need it
            )
        )
    return per_frame
