"""Video sources: a file (paced in real time, optionally looped), a webcam, or a network camera.

Capture runs in its own thread (OpenCV blocks) and hands each frame to the event loop with its
sequence number and capture time; the hand-off is a latest-frame slot, so a slow encoder drops
the oldest frames instead of queueing them.

A live source (webcam or URL) is opened once: the open and first read made at construction are
handed to the capture thread, because many IP cameras serve one client and refuse a second
connection. Whenever it fails or drops, it is reopened with backoff until stopped.
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
from mobieye.redact import printable, redact_url
from mobieye.slot import LatestSlot

log = logging.getLogger(__name__)

Image = npt.NDArray[np.uint8]

URL_RE = re.compile(r"^(rtsp|rtsps|rtmp|http|https)://", re.IGNORECASE)
MAX_REOPEN_WAIT_S = 10.0
OPEN_TIMEOUT_S = 30.0  # how long the constructor retries a live source that is down
# FFmpeg's limits on one connection attempt (RTSP's handshake and probing take ~2 s) and on
# one read of a URL; without them OpenCV waits 30 s on a dead stream. A stalled read is seen
# here to take ~3x the read limit before it fails.
URL_OPEN_TIMEOUT_MS = 10_000
URL_READ_TIMEOUT_MS = 3000
STOP_JOIN_S = 2.0  # stop() waits no longer for the capture thread


@dataclass(eq=False)  # holds images: compared by identity only
class CapturedFrame:
    seq: int
    capture_s: float  # time.monotonic() when the frame was captured (released, for files)
    image: Image | None  # BGR; None for a replayed (already encoded) frame
    index: int = 0  # the source's own frame number (a file's frame, looping from 0)
    gray: Image | None = None  # luma, made in the capture thread


@dataclass(frozen=True)
class SourceSpec:
    kind: str  # "file" | "webcam" | "url"
    target: str | int

    @property
    def label(self) -> str:
        """The source for logs and reports: a URL's password masked, control chars escaped."""
        if self.kind == "url":
            return f"url:{redact_url(str(self.target))}"
        return printable(f"{self.kind}:{self.target}")

    @property
    def live(self) -> bool:
        return self.kind != "file"


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
    if spec.kind == "url":
        timeouts = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, URL_OPEN_TIMEOUT_MS,
                    cv2.CAP_PROP_READ_TIMEOUT_MSEC, URL_READ_TIMEOUT_MS]  # fmt: skip
        cap = cv2.VideoCapture(spec.target, cv2.CAP_FFMPEG, timeouts)
    else:
        cap = cv2.VideoCapture(spec.target)
    if not cap.isOpened():
        raise SourceError(f"cannot open {spec.label}: OpenCV could not open it")
    return cap


def _first_frame(spec: SourceSpec) -> tuple[cv2.VideoCapture, Image]:
    """Open the source and read one frame, or SourceError saying why (nothing left open)."""
    cap = _open(spec)
    ok, frame = cap.read()
    if not ok or frame is None:
        cap.release()
        raise SourceError(f"cannot read {spec.label}: no decodable frame (broken or empty?)")
    return cap, np.asarray(frame, np.uint8)


def _fps(cap: cv2.VideoCapture) -> float:
    fps = float(cap.get(cv2.CAP_PROP_FPS))
    return fps if 1 <= fps <= 240 else 30.0


def probe_source(spec: SourceSpec) -> tuple[float, int, int]:
    """Open the source and read one frame: (fps, width, height), or SourceError saying why."""
    cap, frame = _first_frame(spec)
    try:
        return _fps(cap), frame.shape[1], frame.shape[0]
    finally:
        cap.release()


class VideoSource:
    """Captures frames in a thread and puts them into ``slot`` on ``loop``.

    A file is probed here and opened again by the capture thread. A live source's first open
    and first frame are kept for the capture thread. One that is down at construction is
    retried (blocking) with backoff for up to ``open_timeout_s`` (0: one try), then SourceError
    says why. Once started, a live source that fails or drops is reopened after
    ``reconnect_s``, doubling up to MAX_REOPEN_WAIT_S while tries fail, until stop(); each drop
    and failed try is a WARNING naming the source and why.

    For the agent: ``reopens`` counts the times it came back; ``reopening`` is True while it
    is down; ``last_frame_s`` is the time.monotonic() of the last frame delivered (None before
    the first). Frames keep the size established at construction (a camera that comes back at
    another size is resized), shrunk to ``max_width``.
    """

    def __init__(
        self,
        spec: SourceSpec,
        fps: float | None = None,
        loop_file: bool = False,
        max_width: int | None = None,
        reconnect_s: float = 1.0,
        keep_timeline: bool = False,
        open_timeout_s: float = OPEN_TIMEOUT_S,
    ) -> None:
        self.spec = spec
        self.reconnect_s = reconnect_s
        # The live source's open capture and first frame, until the capture thread takes them.
        self._held: tuple[cv2.VideoCapture, Image, float] | None = None
        if spec.live:
            cap, first = self._open_live(open_timeout_s)
            self._held = (cap, first, time.monotonic())
            native_fps, width, height = _fps(cap), first.shape[1], first.shape[0]
        else:
            native_fps, width, height = probe_source(spec)
        self._native = (width, height)
        self.width, self.height = width, height
        self.fps = fps or native_fps
        # The controller may send fewer frames than the source delivers: frames are then
        # skipped at capture (a file keeps playing in real time, it doesn't slow down).
        self.target_fps = self.fps
        self.loop_file = loop_file
        self.max_width = max_width
        if max_width and self.width > max_width:
            scale = max_width / self.width
            self.width, self.height = max_width, int(round(self.height * scale / 2) * 2)
        self.captured = 0
        self.reopens = 0
        self.reopening = False  # a live source is down and being reopened
        self.last_frame_s: float | None = None
        # Every frame the source delivered, (seq, index, capture_s), seq -1 where the frame was
        # decimated away: the viewer still saw that instant (the bench scores it). Unbounded,
        # so only for bounded runs.
        self.timeline: list[tuple[int, int, float]] | None = [] if keep_timeline else None
        self.ended = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._up_s = 0.0  # when the live source last (re)opened

    def _open_live(self, timeout_s: float) -> tuple[cv2.VideoCapture, Image]:
        deadline = time.monotonic() + timeout_s
        wait = self.reconnect_s
        while True:
            try:
                return _first_frame(self.spec)
            except SourceError as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SourceError(f"{exc} (gave up after {timeout_s:g} s)") from None
                pause = min(wait, left)
                log.warning("%s; retrying in %.1f s", exc, pause)
                time.sleep(pause)
                wait = min(wait * 2, MAX_REOPEN_WAIT_S)

    def start(self, loop: asyncio.AbstractEventLoop, slot: LatestSlot[CapturedFrame]) -> None:
        self._thread = threading.Thread(
            target=self._run, args=(loop, slot), name="capture", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop capturing; waits at most STOP_JOIN_S (a read of a dead stream may block)."""
        self._stop.set()
        if self._thread is None:
            held, self._held = self._held, None
            if held is not None:
                held[0].release()
            return
        self._thread.join(timeout=STOP_JOIN_S)
        if self._thread.is_alive():
            log.warning("%s: capture still blocked in OpenCV; it ends when that returns",
                        self.spec.label)  # fmt: skip

    def _run(self, loop: asyncio.AbstractEventLoop, slot: LatestSlot[CapturedFrame]) -> None:
        try:
            self._capture(loop, slot)
        except Exception:
            log.exception("capture from %s failed", self.spec.label)
        finally:
            self.reopening = False
            self.ended.set()
            if not loop.is_closed():
                loop.call_soon_threadsafe(slot.close)

    def _reopen(self, why: str) -> tuple[cv2.VideoCapture, Image] | None:
        """Reopen a live source with backoff until it gives a frame; None once stopped."""
        down_s = time.monotonic()
        self.reopening = True
        wait = self.reconnect_s
        log.warning("%s dropped (%s); reopening in %.1f s", self.spec.label, why, wait)
        while not self._stop.wait(wait):
            wait = min(wait * 2, MAX_REOPEN_WAIT_S)
            try:
                opened = _first_frame(self.spec)
            except SourceError as exc:
                log.warning("%s; retrying in %.1f s", exc, wait)
                continue
            self.reopens += 1
            self._up_s = time.monotonic()
            self.reopening = False
            log.info("%s reopened after %.1f s down", self.spec.label, self._up_s - down_s)
            height, width = opened[1].shape[:2]
            if (width, height) != self._native:
                log.warning("%s came back at %dx%d; its frames are resized to %dx%d",
                            self.spec.label, width, height, *self._native)  # fmt: skip
            return opened
        return None

    def _fit(self, image: Image) -> Image:
        """The frame at the established size, shrunk to max_width (which may change live)."""
        width, height = self._native
        if self.max_width and width > self.max_width:
            width, height = self.max_width, int(round(height * self.max_width / width / 2) * 2)
        if (image.shape[1], image.shape[0]) == (width, height):
            return image
        return np.asarray(
            cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA), np.uint8
        )

    def _capture(self, loop: asyncio.AbstractEventLoop, slot: LatestSlot[CapturedFrame]) -> None:
        cap: cv2.VideoCapture | None = None
        image: Image | None = None
        read_s = 0.0
        held, self._held = self._held, None
        if held is not None:
            cap, image, read_s = held
            self._up_s = read_s
        period = 1.0 / self.fps
        next_t = time.monotonic()
        index = -1
        next_emit = 0.0
        try:
            while not self._stop.is_set():
                if cap is None:
                    cap = _open(self.spec)  # a file, again: it is there, or this thread ends
                if image is None:
                    ok, frame = cap.read()
                    read_s = time.monotonic()
                    if not ok or frame is None:
                        cap.release()
                        cap = None
                        index = -1
                        if not self.spec.live:
                            if self.loop_file:
                                continue
                            log.info("%s: end of file after %d frames", self.spec.label,
                                     self.captured)  # fmt: skip
                            return
                        since = read_s - (self.last_frame_s or self._up_s)
                        why = f"closed or stalled {since:.1f} s after its last frame"
                        reopened = self._reopen(why)
                        if reopened is None:
                            return
                        cap, image = reopened
                        read_s = time.monotonic()
                    else:
                        image = np.asarray(frame, np.uint8)
                index += 1
                if not self.spec.live:
                    # Files are paced to real time; live sources deliver at their own rate.
                    delay = next_t - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        return
                    next_t = max(next_t + period, time.monotonic() - period)
                    read_s = time.monotonic()
                frame_image, image = image, None
                interval = 1.0 / self.target_fps
                if read_s < next_emit - 0.3 * interval:
                    if self.timeline is not None:
                        self.timeline.append((-1, index, read_s))
                    continue  # decimated to target_fps (with slack for timing noise)
                next_emit = max(next_emit + interval, read_s - 0.5 * interval)
                fitted = self._fit(frame_image)
                gray = np.asarray(cv2.cvtColor(fitted, cv2.COLOR_BGR2GRAY), np.uint8)
                captured = CapturedFrame(self.captured, read_s, fitted, index, gray)
                if self.timeline is not None:
                    self.timeline.append((self.captured, index, read_s))
                self.captured += 1
                self.last_frame_s = time.monotonic()
                if loop.is_closed():
                    return
                loop.call_soon_threadsafe(slot.put, captured)
        finally:
            if cap is not None:
                cap.release()
