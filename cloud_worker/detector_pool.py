"""Runs the worker's detectors off the event loop, one inference at a time, for every stream.

A worker may hold a ladder of models; each stream says which one it wants. All share one
inference thread (on a small box two concurrent inferences only slow each other down). Each
stream has at most one detection in flight (the keyframe policy treats it as busy), so the queue
is bounded by the number of streams; submissions past ``max_pending`` are refused.

The pool keeps each model's measured inference time (mean and spread, exponentially weighted),
which the controller uses to pick the most accurate model that fits the latency budget.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from mobieye.detections import Detections
from mobieye.detector import Detector, Image

log = logging.getLogger(__name__)

EWMA_ALPHA = 0.1
PROFILE_RUNS = 8


@dataclass(frozen=True)
class DetectOutput:
    model: str
    detections: Detections
    inference_ms: float
    waited_ms: float  # queued behind other streams' detections


@dataclass
class ModelStats:
    label: str
    accuracy: float
    mean_ms: float = 0.0
    var_ms2: float = 0.0
    runs: int = 0

    @property
    def std_ms(self) -> float:
        return math.sqrt(max(self.var_ms2, 0.0))

    def observe(self, ms: float) -> None:
        if self.runs == 0:
            self.mean_ms, self.var_ms2 = ms, 0.0
        else:
            delta = ms - self.mean_ms
            self.mean_ms += EWMA_ALPHA * delta
            self.var_ms2 = (1 - EWMA_ALPHA) * (self.var_ms2 + EWMA_ALPHA * delta * delta)
        self.runs += 1


class PoolBusy(Exception):
    """More detections are waiting than the pool accepts."""


class DetectorPool:
    def __init__(self, detectors: dict[str, tuple[Detector, float]], max_pending: int = 8) -> None:
        """``detectors``: label -> (loaded detector, declared accuracy)."""
        if not detectors:
            raise ValueError("a detector pool needs at least one detector")
        self.detectors = {label: d for label, (d, _) in detectors.items()}
        self.stats = {label: ModelStats(label, acc) for label, (_, acc) in detectors.items()}
        # The default is the most accurate model: the controller steps down when it must.
        self.default = max(self.stats.values(), key=lambda s: s.accuracy).label
        self.max_pending = max_pending
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="detector")
        self._lock = threading.Lock()
        self._pending = 0
        self.runs = 0
        self.busy_s = 0.0  # wall time spent inside the detectors

    def names(self, label: str) -> dict[int, str]:
        return self.detectors[label].names

    def profile(self, frame_shape: tuple[int, int, int] = (480, 640, 3)) -> None:
        """Measure every model on a synthetic frame: the controller's prior before real runs."""
        rng = np.random.default_rng(0)
        image = rng.integers(0, 255, frame_shape, dtype=np.uint8)
        for label, detector in self.detectors.items():
            for _ in range(PROFILE_RUNS):
                started = time.perf_counter()
                detector.detect([image])
                self.stats[label].observe((time.perf_counter() - started) * 1000)
            s = self.stats[label]
            log.info("model %s: %.1f ± %.1f ms per frame", label, s.mean_ms, s.std_ms)

    def submit(self, image: Image, label: str | None = None) -> Future[DetectOutput]:
        label = label or self.default
        if label not in self.detectors:
            raise KeyError(f"unknown model {label!r}; this worker has {', '.join(self.detectors)}")
        with self._lock:
            if self._pending >= self.max_pending:
                raise PoolBusy(f"{self._pending} detections already waiting")
            self._pending += 1
        return self._executor.submit(self._run, image, label, time.perf_counter())

    def _run(self, image: Image, label: str, submitted: float) -> DetectOutput:
        started = time.perf_counter()
        try:
            detections = self.detectors[label].detect([image])[0]
        finally:
            elapsed = time.perf_counter() - started
            with self._lock:
                self._pending -= 1
                self.runs += 1
                self.busy_s += elapsed
                self.stats[label].observe(elapsed * 1000)
        return DetectOutput(label, detections, elapsed * 1000, (started - submitted) * 1000)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
