"""Drawing boxes on a frame: the one annotator, pure (a new image out, nothing else touched).

Used by the edge's recording, the worker's MJPEG viewer and anything else that shows boxes.
Boxes come as :class:`~mobieye.detections.Detections` in the image's pixels; labels from
``names`` (class id -> name).
"""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np
import numpy.typing as npt

from mobieye.detections import NO_TRACK, Detections
from mobieye.messages import Result

Image = npt.NDArray[np.uint8]
WHITE = (255, 255, 255)


def track_color(track_id: int) -> tuple[int, int, int]:
    """A stable, distinct BGR colour per track id."""
    hsv = np.array([[[(track_id * 47) % 180, 200, 255]]], dtype=np.uint8)
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def draw_detections(
    image: Image, boxes: Detections, names: Mapping[int, str], caption: str | None = None
) -> Image:
    """``image`` with each box, its label, track id and score drawn, and a caption."""
    out = image.copy()
    h = out.shape[0]
    for xyxy, cls, score, tid in zip(
        boxes.xyxy, boxes.class_id, boxes.confidence, boxes.tracker_id, strict=True
    ):
        x1, y1, x2, y2 = (int(v) for v in xyxy)
        color = track_color(int(tid)) if tid != NO_TRACK else WHITE
        cv2.rectangle(out, (x1, y1), (x2, y2), color, 2)
        name = names.get(int(cls), str(int(cls)))
        label = f"{name} #{tid} {score:.2f}" if tid != NO_TRACK else f"{name} {score:.2f}"
        cv2.putText(out, label, (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1)
    if caption:
        cv2.putText(out, caption, (8, h - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, WHITE, 1)
    return out


def draw_result(image: Image, result: Result) -> Image:
    """A data-channel result's boxes on the frame it belongs to (any size: they are normalised)."""
    h, w = image.shape[:2]
    names = {b.cls: b.label for b in result.boxes}
    boxes = Detections.from_wire(result.boxes, w, h)
    return draw_detections(image, boxes, names, f"seq {result.seq} {result.source}")
