"""Video sources: a file (paced in real time, optionally looped), a webcam, or a network camera.

Capture runs in its own thread (OpenCV blocks) and hands each frame to the event loop with its
sequence number and capture time; the hand-off is a latest-frame slot, so a slow encoder drops
the oldest frames instead of queueing them.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from mobieye.errors import SourceError
from mobieye.slot import LatestSlot

log = logging.getLogger(__name__)

URL_RE = re.compile(r"^(rtsp|rtsps|rtmp|http|https)://", re.IGNORECASE)
MAX_REOPEN_WAIT_S = 10.0


@dataclass(eq=False)  # holds images: compared by identity only
class CapturedFrame:
    seq: int
    capture_s: float  # time.monotonic() when the frame was captured (released, for files)
    image: npt.NDArray[np.uint8]  # BGR
    index: int = 0  # the source's own frame number (a file's frame, looping from 0)
    gray: npt.NDArray[np.uint8] | None = None  # luma, made in the capture thread


@dataclass(frozen=True)
class SourceSpec:
    kind: str  # "file" | "webcam" | "url"
    target: str | int

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.target}"


def parse_source(spec: str) -> SourceSpec:
    """Classify a --source value; a file that doesn't exist is an error naming it."""
    if spec.isdigit():
        return SourceSpec("webcam", int(spec))
    if URL_RE.match(spec):
        return SourceSpec("url", spec)
    path = Path(spec).expanduser()
    if not path.exists():
        raise SourceError(f"video source {spec!r}: no such file (nor a webcam index or URL)")
    if not path.is_file():
        raise SourceError(f"video source {spec!r} is not a file")
    return SourceSpec("file", str(path))


def _open(spec: SourceSpec) -> cv2.VideoCapture:
    cap = cv2.VideoCapture(spec.target)
    if not cap.isOpened():
        raise SourceError(f"cannot open {spec.label}: OpenCV could not open it")
    return cap


def probe_source(spec: SourceSpec) -> tuple[float, int, int]:
    """Open the source and read one frame: (fps, width, height), or SourceError saying why."""
    cap = _open(spec)
    try:
        ok, frame = cap.read()
        if not ok or frame is None:
            raise SourceError(f"cannot read {spec.label}: no decodable frame (broken or empty?)")
        fps = cap.get(cv2.CAP_PROP_FPS)
        return (fps if 1 <= fps <= 240 else 30.0), frame.shape[1], frame.shape[0]
    finally:
        cap.release()


class VideoSource:
    """Captures frames in a thread and puts them into ``slot`` on ``loop``."""

    def __init__(
        self,
        spec: SourceSpec,
        fps: float | None = None,
        loop_file: bool = False,
        max_width: int | None = None,
        reconnect_s: float = 1.0,
        keep_timeline: bool = False,
    ) -> None:
        self.spec = spec
        native_fps, self.width, self.height = probe_source(spec)
        self.fps = fps or native_fps
        # The controller may send fewer frames than the source delivers: frames are then
        # skipped at capture (a file keeps playing in real time, it doesn't slow down).
        self.target_fps = self.fps
        self.loop_file = loop_file
        self.max_width = max_width
        self.reconnect_s = reconnect_s
        if max_width and self.width > max_width:
            scale = max_width / self.width
            self.width, self.height = max_width, int(round(self.height * scale / 2) * 2)
        self.captured = 0
        self.reopens = 0
        # Every frame the source delivered, (seq, index, capture_s), seq -1 where the frame was
        # decimated away: the viewer still saw that instant (the bench scores it). Unbounded,
        # so only for bounded runs.
        self.timeline: list[tuple[int, int, float]] | None = [] if keep_timeline else None
        self.ended = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, loop: asyncio.AbstractEventLoop, slot: LatestSlot[CapturedFrame]) -> None:
        self._thread = threading.Thread(
            target=self._run, args=(loop, slot), name="capture", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def _run(self, loop: asyncio.AbstractEventLoop, slot: LatestSlot[CapturedFrame]) -> None:
        try:
            self._capture(loop, slot)
        except Exception:
            log.exception("capture from %s failed", self.spec.label)
        finally:
            self.ended.set()
            if not loop.is_closed():
                loop.call_soon_threadsafe(slot.close)

    def _capture(self, loop: asyncio.AbstractEventLoop, slot: LatestSlot[CapturedFrame]) -> None:
        period = 1.0 / self.fps
        cap = _open(self.spec)
        next_t = time.monotonic()
        index = -1
        next_emit = 0.0
        wait = self.reconnect_s
        while not self._stop.is_set():
            ok, image = cap.read()
            if not ok or image is None:
                cap.release()
                if self.spec.kind == "file" and not self.loop_file:
                    log.info("%s: end of file after %d frames", self.spec.label, self.captured)
                    return
                if self.spec.kind != "file":
                    log.warning("%s dropped; reopening in %.1f s", self.spec.label, wait)
                    if self._stop.wait(wait):
                        return
                    wait = min(wait * 2, MAX_REOPEN_WAIT_S)
                try:
                    index = -1
                    cap = _open(self.spec)
                    self.reopens += self.spec.kind != "file"
                except SourceError as exc:
                    log.warning("%s", exc)
                continue
            wait = self.reconnect_s
            index += 1
            if self.spec.kind == "file":
                # Files are paced to real time; live sources deliver at their own rate.
                delay = next_t - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
                next_t = max(next_t + period, time.monotonic() - period)
            now = time.monotonic()
            interval = 1.0 / self.target_fps
            if now < next_emit - 0.3 * interval:
                if self.timeline is not None:
                    self.timeline.append((-1, index, now))
                continue  # decimated to target_fps (with slack for timing noise)
            next_emit = max(next_emit + interval, now - 0.5 * interval)
            width = self.max_width
            if width and image.shape[1] > width:
                height = int(round(image.shape[0] * width / image.shape[1] / 2) * 2)
                image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
            gray = np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), np.uint8)
            frame = CapturedFrame(self.captured, now, np.asarray(image, np.uint8), index, gray)
            if self.timeline is not None:
                self.timeline.append((self.captured, index, now))
            self.captured += 1
            loop.call_soon_threadsafe(slot.put, frame)
        cap.release()
