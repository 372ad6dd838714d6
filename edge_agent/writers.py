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

from mobieye.annotate import draw_result

log = logging.getLogger(__name__)

WRITER_CLOSE_S = 3.0  # finishing a file (an mp4's index) takes well under this


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
        """Finish the file; never blocks long, even on a writer thread that died."""
        try:
            self._queue.put(None, timeout=WRITER_CLOSE_S if self._thread.is_alive() else 0.01)
        except queue.Full:
            log.error("%s: the writer is stuck or dead; the file may be incomplete", self.path)
            return
        self._thread.join(timeout=WRITER_CLOSE_S)
        if self._thread.is_alive():
            log.error("%s: the writer did not finish in %.0f s", self.path, WRITER_CLOSE_S)
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
                frame = draw_result(image, result)
                if (frame.shape[1], frame.shape[0]) != self.size:
                    writer.write(cv2.resize(frame, self.size))
                else:
                    writer.write(frame)
        finally:
            writer.release()
