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
from collections import deque
from concurrent.futures import Future
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


@dataclass
class _Request:
    image: Image
    label: str
    submitted: float
    future: Future[DetectOutput]


class DetectorPool:
    """One inference thread for all streams; keyframes waiting together go in one batch.

    Fairness: each stream has at most one request waiting (its keyframe policy sees it busy),
    and requests are served oldest first, so a busy stream can't starve the others.
    """

    def __init__(
        self, detectors: dict[str, tuple[Detector, float]], max_pending: int = 8, max_batch: int = 4
    ) -> None:
        """``detectors``: label -> (loaded detector, declared accuracy)."""
        if not detectors:
            raise ValueError("a detector pool needs at least one detector")
        self.detectors = {label: d for label, (d, _) in detectors.items()}
        self.stats = {label: ModelStats(label, acc) for label, (_, acc) in detectors.items()}
        # The default is the most accurate model: the controller steps down when it must.
        self.default = max(self.stats.values(), key=lambda s: s.accuracy).label
        self.max_pending = max_pending
        self.max_batch = max_batch
        self._queue: deque[_Request] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.runs = 0  # images detected
        self.batches = 0  # detector calls
        self.busy_s = 0.0  # wall time spent inside the detectors
        self._thread = threading.Thread(target=self._serve, name="detector", daemon=True)
        self._thread.start()

    def names(self, label: str) -> dict[int, str]:
        return self.detectors[label].names

    @property
    def pending(self) -> int:
        return len(self._queue)

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
        future: Future[DetectOutput] = Future()
        with self._cond:
            if len(self._queue) >= self.max_pending:
                raise PoolBusy(f"{len(self._queue)} detections already waiting")
            self._queue.append(_Request(image, label, time.perf_counter(), future))
            self._cond.notify()
        return future

    def _next_batch(self) -> list[_Request] | None:
        """The oldest request and those waiting with it for the same model and frame size."""
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            first = self._queue.popleft()
            batch = [first]
            for req in list(self._queue):
                if len(batch) >= self.max_batch:
                    break
                if req.label == first.label and req.image.shape == first.image.shape:
                    self._queue.remove(req)
                    batch.append(req)
            return batch

    def _serve(self) -> None:
        while (batch := self._next_batch()) is not None:
            live = [r for r in batch if r.future.set_running_or_notify_cancel()]
            if not live:
                continue
            label = live[0].label
            started = time.perf_counter()
            try:
                found = self.detectors[label].detect([r.image for r in live])
            except Exception as exc:
                for r in live:
                    r.future.set_exception(exc)
                continue
            elapsed = time.perf_counter() - started
            self.runs += len(live)
            self.batches += 1
            self.busy_s += elapsed
            self.stats[label].observe(elapsed * 1000 / len(live))
            for r, dets in zip(live, found, strict=True):
                waited = (started - r.submitted) * 1000
                r.future.set_result(DetectOutput(label, dets, elapsed * 1000, waited))

    def shutdown(self) -> None:
        with self._cond:
            self._closed = True
            for r in self._queue:
                r.future.cancel()
            self._queue.clear()
            self._cond.notify_all()
