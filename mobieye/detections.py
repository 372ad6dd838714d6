"""The core value type: a set of boxes in one frame, the only one in memory.

Modelled on supervision's ``Detections``: parallel numpy arrays, validated on construction, with
adapters in and out: ultralytics results in; the data channel's normalised boxes
(:class:`~mobieye.messages.Box`) out and back with :meth:`Detections.to_wire` and
:meth:`Detections.from_wire`. Coordinates are pixels unless a caller keeps them normalised
(the bench's references and the edge's timeline do: frame sizes change under the controller).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from mobieye.messages import Box

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

NO_TRACK = -1


def _as_float(a: Any, shape: tuple[int, ...]) -> FloatArray:
    return np.asarray(a, dtype=np.float32).reshape(shape)


def _as_int(a: Any, n: int) -> IntArray:
    return np.asarray(a, dtype=np.int64).reshape((n,))


# eq=False: the generated __eq__ would compare arrays with numpy == (it raises, or is ambiguous).
@dataclass(eq=False)
class Detections:
    """Boxes in pixel xyxy of one frame, with per-box confidence, class and track id (-1: none)."""

    xyxy: FloatArray
    confidence: FloatArray
    class_id: IntArray
    tracker_id: IntArray = field(default_factory=lambda: np.empty((0,), dtype=np.int64))

    def __post_init__(self) -> None:
        n = int(np.asarray(self.xyxy).size // 4)
        self.xyxy = _as_float(self.xyxy, (n, 4))
        self.confidence = _as_float(self.confidence, (n,))
        self.class_id = _as_int(self.class_id, n)
        if np.asarray(self.tracker_id).size == 0 and n:
            self.tracker_id = np.full((n,), NO_TRACK, dtype=np.int64)
        else:
            self.tracker_id = _as_int(self.tracker_id, n)

    @classmethod
    def empty(cls) -> Detections:
        return cls(
            np.empty((0, 4), dtype=np.float32),
            np.empty((0,), dtype=np.float32),
            np.empty((0,), dtype=np.int64),
        )

    @classmethod
    def from_ultralytics(cls, result: Any) -> Detections:
        """Adapter from one ``ultralytics.engine.results.Results``."""
        boxes = result.boxes
        if boxes is None or len(boxes) == 0:
            return cls.empty()
        return cls(
            xyxy=boxes.xyxy.cpu().numpy(),
            confidence=boxes.conf.cpu().numpy(),
            class_id=boxes.cls.cpu().numpy().astype(np.int64),
        )

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    def __getitem__(self, index: Any) -> Detections:
        """Select boxes by a boolean mask, an index array or a slice."""
        return Detections(
            self.xyxy[index],
            self.confidence[index],
            self.class_id[index],
            self.tracker_id[index],
        )

    def copy(self) -> Detections:
        return Detections(
            self.xyxy.copy(), self.confidence.copy(), self.class_id.copy(), self.tracker_id.copy()
        )

    @staticmethod
    def concat(items: Sequence[Detections]) -> Detections:
        items = [d for d in items if len(d)]
        if not items:
            return Detections.empty()
        return Detections(
            np.concatenate([d.xyxy for d in items]),
            np.concatenate([d.confidence for d in items]),
            np.concatenate([d.class_id for d in items]),
            np.concatenate([d.tracker_id for d in items]),
        )

    def clip(self, width: int, height: int) -> Detections:
        """Boxes clipped to the frame; boxes left with no area are dropped."""
        out = self.copy()
        out.xyxy[:, [0, 2]] = np.clip(out.xyxy[:, [0, 2]], 0, width)
        out.xyxy[:, [1, 3]] = np.clip(out.xyxy[:, [1, 3]], 0, height)
        keep = (out.xyxy[:, 2] - out.xyxy[:, 0] > 1) & (out.xyxy[:, 3] - out.xyxy[:, 1] > 1)
        return out[keep]

    def normalized_xyxy(self, width: int, height: int) -> FloatArray:
        """Boxes as fractions of the frame size, the form they take on the wire."""
        scale = np.array([width, height, width, height], dtype=np.float32)
        out: FloatArray = np.clip(self.xyxy / scale, 0.0, 1.0)
        return out

    def normalized(self, width: int, height: int) -> Detections:
        return Detections(
            self.normalized_xyxy(width, height), self.confidence, self.class_id, self.tracker_id
        )

    def scaled(self, width: float, height: float) -> Detections:
        """Normalised boxes back to pixels of a ``width`` x ``height`` frame."""
        scale = np.array([width, height, width, height], dtype=np.float32)
        return Detections(self.xyxy * scale, self.confidence, self.class_id, self.tracker_id)

    def confident(self, min_score: float) -> Detections:
        return self[self.confidence >= min_score]

    def to_wire(self, width: int, height: int, names: Mapping[int, str]) -> list[Box]:
        """The data channel's boxes: normalised to the frame, rounded, labelled by ``names``."""
        norm = np.round(self.normalized_xyxy(width, height), 4)
        return [
            Box(xyxy=(float(b[0]), float(b[1]), float(b[2]), float(b[3])), cls=int(c),
                label=names.get(int(c), str(int(c))), score=round(float(s), 3), track_id=int(t))
            for b, c, s, t in zip(norm, self.class_id, self.confidence, self.tracker_id,
                                  strict=True)
        ]  # fmt: skip

    @classmethod
    def from_wire(cls, boxes: Sequence[Box], width: float = 1.0, height: float = 1.0) -> Detections:
        """Wire boxes as pixels of a ``width`` x ``height`` frame (default: kept normalised)."""
        if not boxes:
            return cls.empty()
        return cls(
            np.array([b.xyxy for b in boxes], np.float32),
            np.array([b.score for b in boxes], np.float32),
            np.array([b.cls for b in boxes], np.int64),
            np.array([b.track_id for b in boxes], np.int64),
        ).scaled(width, height)


def box_iou(a: FloatArray, b: FloatArray) -> FloatArray:
    """Pairwise IoU of two sets of xyxy boxes, shape (len(a), len(b))."""
    a = np.asarray(a, dtype=np.float32).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float32).reshape(-1, 4)
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(br - tl, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    iou: FloatArray = np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0).astype(np.float32)
    return iou
