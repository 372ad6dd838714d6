"""File output off the event loop: the per-frame trace (JSONL) and the annotated recording.

Each writer owns a thread and a bounded queue; when the disk can't keep up the newest item is
dropped and counted (the run itself must never stall on a file).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from mobieye.messages import Result

log = logging.getLogger(__name__)


class _ThreadedWriter:
    def __init__(self, path: Path, maxsize: int) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=maxsize)
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name=f"writer-{path.name}", daemon=True)
        self._thread.start()

    def put(self, item: Any) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)
        if self.dropped:
            log.warning("%s: %d items dropped (disk too slow)", self.path, self.dropped)

    def _run(self) -> None:
        raise NotImplementedError


class TraceWriter(_ThreadedWriter):
    def __init__(self, path: Path) -> None:
        super().__init__(path, maxsize=10_000)

    def _run(self) -> None:
        with self.path.open("w") as f:
            while (item := self._queue.get()) is not None:
                f.write(json.dumps(item) + "\n")


def track_color(track_id: int) -> tuple[int, int, int]:
    """A stable, distinct BGR colour per track id."""
    hsv = np.array([[[(track_id * 47) % 180, 200, 255]]], dtype=np.uint8)
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def draw_boxes(image: npt.NDArray[np.uint8], result: Result) -> npt.NDArray[np.uint8]:
    out = image.copy()
    h, w = out.shape[:2]
    for box in result.boxes:
        x1, y1, x2, y2 = (int(v * s) for v, s in zip(box.xyxy, (w, h, w, h), strict=True))
        color = track_color(box.track_id)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, 2)
        label = f"{box.label} #{box.track_id} {box.score:.2f}"
        cv2.putText(out, label, (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1)
    tag = f"seq {result.seq} {result.source}"
    cv2.putText(out, tag, (8, h - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
    return out


class VideoRecorder(_ThreadedWriter):
    """Writes each frame that got a result, with its boxes drawn, to an mp4 file."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]) -> None:
        self.fps = fps
        self.size = size
        super().__init__(path, maxsize=120)

    def _run(self) -> None:
        writer = cv2.VideoWriter(
            str(self.path), cv2.VideoWriter.fourcc(*"mp4v"), self.fps, self.size
        )
        if not writer.isOpened():
            log.error("cannot write video %s (no mp4v encoder?)", self.path)
            while self._queue.get() is not None:
                pass
            return
        try:
            while (item := self._queue.get()) is not None:
                image, result = item
                frame = draw_boxes(image, result)
                if (frame.shape[1], frame.shape[0]) != self.size:
                    writer.write(cv2.resize(frame, self.size))
                else:
                    writer.write(frame)
        finally:
            writer.release()
