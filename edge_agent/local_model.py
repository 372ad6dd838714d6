"""The edge's own detector: MDInference's duplicate of the cloud model, on the device.

When a frame's cloud result misses its deadline, or no worker is reachable at all (start-up,
failover, an outage, no fleet), the agent offers the newest frame here. One detection runs at a
time on the model's own thread with a fixed CPU thread budget (``edge.local_threads``); a frame
offered while it is busy is refused (the next late frame is newer anyway), so through an outage
the edge detects as often as its CPU allows and its tracker moves the boxes in between. The
result comes back on the event loop as a :class:`~mobieye.messages.Result` with source
``local``; a cloud result for a later frame replaces it as the newest.

A model that can't load leaves the edge on its tracker-only fallback, said once in the log.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import numpy.typing as npt

from mobieye.config import DetectorConfig
from mobieye.detector import Detector, UltralyticsDetector
from mobieye.errors import ConfigError
from mobieye.messages import Result, Timings
from mobieye.models.ladder import ladder_from_spec
from mobieye.tracking import TrackAssigner

log = logging.getLogger(__name__)

LOCAL_FIRST_ID = 1_000_000

Image = npt.NDArray[np.uint8]


def local_detector(spec: str, threads: int) -> UltralyticsDetector:
    """``PATH[@IMGSZ]`` as a detector with ``threads`` CPU threads (not loaded yet)."""
    models = ladder_from_spec(spec)
    if len(models) != 1:
        raise ConfigError(f"edge.local_model names one model, PATH[@IMGSZ]; got {len(models)}")
    (model,) = models
    cfg = DetectorConfig(model=model.path, imgsz=model.imgsz, threads=threads)
    return UltralyticsDetector(cfg)


class LocalModel:
    def __init__(
        self, detector: Detector, on_result: Callable[[Result], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:  # fmt: skip
        self.detector = detector
        self._on_result = on_result
        self._loop = loop
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="local-model")
        self._busy = threading.Event()
        # Ids across its detections (a few frames apart: IoU holds for people), in a range of
        # their own: the cloud's ids are its worker's, and one must never pass for the other.
        self.assigner = TrackAssigner(max_misses=1, first_id=LOCAL_FIRST_ID)
        self.ready = False
        self.problem: str | None = None  # why it can't detect (None: it can, or still loading)
        self.detections = 0
        self.busy_s = 0.0  # wall time inside the detector

    async def load(self) -> None:
        """Load off the loop; a failure is logged and remembered, never raised."""
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self.detector.load)
        except Exception as exc:  # ModelError names the path; anything else says what broke
            self.problem = f"on-device model unusable: {exc}"
            log.error("%s; the edge falls back to tracking the cloud's boxes", self.problem)
            return
        self.ready = True
        log.info("on-device model %s ready", getattr(self.detector, "name", "?"))

    def offer(self, seq: int, image: Image) -> bool:
        """Detect on frame ``seq`` unless a detection is running; True if it started."""
        if not self.ready or self._busy.is_set():
            return False
        self._busy.set()
        future = self._executor.submit(self._detect, seq, image)
        future.add_done_callback(self._done)
        return True

    def _detect(self, seq: int, image: Image) -> Result:
        started = time.perf_counter()
        try:
            (dets,) = self.detector.detect([image])
        finally:
            self.busy_s += time.perf_counter() - started
        dets = self.assigner.update(dets)  # this thread only: no lock
        h, w = image.shape[:2]
        ms = (time.perf_counter() - started) * 1000
        names = getattr(self.detector, "names", {})
        return Result(
            seq=seq, pts=0, source="local", detect_seq=seq,
            model=str(getattr(self.detector, "name", "local")), width=w, height=h,
            boxes=dets.to_wire(w, h, names), timings=Timings(detect_ms=round(ms, 2)),
        )  # fmt: skip

    def _done(self, future: Future[Result]) -> None:
        self._busy.clear()
        try:
            result = future.result()
        except Exception as exc:  # one bad frame: logged, the next offer tries again
            log.warning("on-device detection failed: %r", exc)
            return
        self.detections += 1
        self._loop.call_soon_threadsafe(self._on_result, result)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
