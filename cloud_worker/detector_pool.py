"""Runs the detector off the event loop, one inference at a time, for every stream of a worker.

Each stream has at most one detection in flight (the keyframe policy treats it as busy), so the
queue is bounded by the number of streams; submissions past ``max_pending`` are refused.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from mobieye.detections import Detections
from mobieye.detector import Detector, Image

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetectOutput:
    detections: Detections
    inference_ms: float
    waited_ms: float  # queued behind other streams' detections


class PoolBusy(Exception):
    """More detections are waiting than the pool accepts."""


class DetectorPool:
    def __init__(self, detector: Detector, max_pending: int = 8) -> None:
        self.detector = detector
        self.max_pending = max_pending
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="detector")
        self._lock = threading.Lock()
        self._pending = 0
        self.runs = 0
        self.busy_s = 0.0  # wall time spent inside the detector

    @property
    def model_name(self) -> str:
        return self.detector.name

    def submit(self, image: Image) -> Future[DetectOutput]:
        with self._lock:
            if self._pending >= self.max_pending:
                raise PoolBusy(f"{self._pending} detections already waiting")
            self._pending += 1
        return self._executor.submit(self._run, image, time.perf_counter())

    def _run(self, image: Image, submitted: float) -> DetectOutput:
        started = time.perf_counter()
        try:
            detections = self.detector.detect([image])[0]
        finally:
            elapsed = time.perf_counter() - started
            with self._lock:
                self._pending -= 1
                self.runs += 1
                self.busy_s += elapsed
        return DetectOutput(detections, elapsed * 1000, (started - submitted) * 1000)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
