"""Runs the worker's detectors off the event loop, one inference at a time, for every stream.

A worker may hold a ladder of models; each stream says which one it wants. All share one
inference thread (on a small box two concurrent inferences only slow each other down). Each
stream has at most one detection in flight (the keyframe policy treats it as busy), so the queue
is bounded by the number of streams; submissions past ``max_pending`` are refused.

The inference thread is supervised: if anything escapes it, the traceback is logged, the
detections it held fail at once (no caller hangs), it is restarted and the restart is counted.
What it completes and fails is kept as :class:`DetectorFacts` for the worker's health.

The pool keeps each model's measured inference time (mean and spread, exponentially weighted),
which the controller uses to pick the most accurate model that fits the latency budget.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from cloud_worker.detector_health import DetectorFacts
from mobieye.controller import starting_model
from mobieye.detections import Detections
from mobieye.detector import Detector, Image
from mobieye.messages import ModelInfo

log = logging.getLogger(__name__)

EWMA_ALPHA = 0.1
PROFILE_RUNS = 8
# A pending detection is abandoned after this many of its expected waits (queue ahead + its own
# batch), and never before the configured floor.
DEADLINE_FACTOR = 3.0
RESTART_BACKOFF_S = (0.05, 5.0)  # first and longest pause before restarting a crashed thread


@dataclass(frozen=True, eq=False)
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


def _notify(callback: Callable[..., None] | None, *args: object) -> None:
    """Tell an observer (metrics); it must never take the inference thread down with it."""
    if callback is None:
        return
    try:
        callback(*args)
    except Exception:
        log.exception("detector pool observer failed")


class PoolBusy(Exception):
    """More detections are waiting than the pool accepts."""


class DetectorCrashed(RuntimeError):
    """The inference thread died holding this detection (it has been restarted)."""


# eq=False: requests hold images, and the generated __eq__ would compare them with numpy's ==
# (which raises for two different frames). Requests are only ever told apart by identity.
@dataclass(eq=False)
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
        self,
        detectors: dict[str, tuple[Detector, float]],
        max_pending: int = 8,
        max_batch: int = 4,
        min_deadline_s: float = 1.0,
        on_restart: Callable[[], None] | None = None,
        on_failure: Callable[[int], None] | None = None,
    ) -> None:
        """``detectors``: label -> (loaded detector, declared accuracy)."""
        if not detectors:
            raise ValueError("a detector pool needs at least one detector")
        self.detectors = {label: d for label, (d, _) in detectors.items()}
        self.stats = {label: ModelStats(label, acc) for label, (_, acc) in detectors.items()}
        # The default is the most accurate model: the controller steps down when it must.
        self.default = max(self.stats.values(), key=lambda s: s.accuracy).label
        self.max_pending = max_pending
        # Set each second by the worker's overload governor (mobieye/capacity.py): how much
        # longer every stream's keyframe spacing is than its own policy says.
        self.keyframe_stretch = 1.0
        self.streams = 0  # attached streams: what a new stream's starting model must allow for
        self._start_cache: tuple[tuple[int, float], float, str] | None = None
        self.max_batch = max_batch
        self.min_deadline_s = min_deadline_s
        self._on_restart = on_restart
        self._on_failure = on_failure
        self._queue: deque[_Request] = deque()
        self._running: list[_Request] = []  # the batch inside a detector now
        self._cond = threading.Condition()
        self._closed = False
        self.runs = 0  # images detected
        self.batches = 0  # detector calls
        self.busy_s = 0.0  # wall time spent inside the detectors
        self.failures = 0  # images whose detection raised
        self.restarts = 0  # times the inference thread died and was restarted
        self._last_success_s: float | None = None
        self._last_failure_s: float | None = None
        self._failures_in_row = 0
        self._last_error: str | None = None
        self._thread = threading.Thread(target=self._supervise, name="detector", daemon=True)
        self._thread.start()

    def model_infos(self) -> list[ModelInfo]:
        """Every model with the inference time measured here: what edges choose from."""
        return [
            ModelInfo(
                label=s.label, accuracy=s.accuracy,
                mean_ms=round(s.mean_ms, 2), std_ms=round(s.std_ms, 2),
            )
            for s in self.stats.values()
        ]  # fmt: skip

    def attach(self) -> None:
        """A stream starts using the pool (its starting model counts it)."""
        with self._cond:
            self.streams += 1

    def detach(self) -> None:
        with self._cond:
            self.streams = max(0, self.streams - 1)

    def starting_label(self, detections_per_s: float) -> str:
        """The model for a stream its edge has not chosen one for yet: the most accurate one
        that the streams now attached can all run at ``detections_per_s`` each."""
        # Asked every frame: worked out again only when the load changes, or after a second
        # (the measured times drift), not per frame.
        key, now = (self.streams, detections_per_s), time.monotonic()
        cached = self._start_cache
        if cached is not None and cached[0] == key and now - cached[1] < 1.0:
            return cached[2]
        chosen = starting_model(self.model_infos(), self.streams, detections_per_s)
        label = chosen.label if chosen is not None else self.default
        self._start_cache = (key, now, label)
        return label

    def names(self, label: str) -> dict[int, str]:
        return self.detectors[label].names

    @property
    def pending(self) -> int:
        return len(self._queue)

    def profile(self, frame_shape: tuple[int, int, int] = (480, 640, 3)) -> None:
        """Warm every model up, then the controller's prior before real runs: the figures
        ``mobieye models profile`` cached for a model's runtime on this machine, else a
        measurement on a synthetic frame."""
        rng = np.random.default_rng(0)
        image = rng.integers(0, 255, frame_shape, dtype=np.uint8)
        for label, detector in self.detectors.items():
            # Every batch size once, so a runtime that compiles per input shape (OpenVINO:
            # about a second each) does it now, not while a stream waits (measured: the first
            # batched keyframes of 8 new streams came back 45 frames late).
            for n in range(1, self.max_batch + 1):
                detector.detect([image] * n)
            prior = getattr(detector, "prior_ms", None)
            if prior is not None and prior[0] == getattr(detector, "runtime", None):
                s = self.stats[label]
                s.mean_ms, s.var_ms2, s.runs = prior[1], prior[2] ** 2, PROFILE_RUNS
                log.info("model %s: %.1f ± %.1f ms per frame on %s (profiled)", label,
                         s.mean_ms, s.std_ms, prior[0])  # fmt: skip
                continue
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
            if self._closed:
                raise PoolBusy("the detector pool is shut down")
            if len(self._queue) >= self.max_pending:
                raise PoolBusy(f"{len(self._queue)} detections already waiting")
            self._queue.append(_Request(image, label, time.monotonic(), future))
            self._cond.notify()
        return future

    def cancel(self, future: Future[DetectOutput]) -> None:
        """Give up on a detection: out of the queue at once if it hasn't started."""
        with self._cond:
            self._queue = deque(r for r in self._queue if r.future is not future)
        future.cancel()

    def deadline_s(self, label: str | None = None) -> float:
        """How long a detection submitted now may take before its stream gives up on it: a few
        of its expected waits (the batches queued ahead, then its own), at least the floor."""
        s = self.stats[label or self.default]
        batch_ms = (s.mean_ms + 2 * s.std_ms) * self.max_batch
        batches = math.ceil(len(self._queue) / self.max_batch) + 2  # the running one, its own
        return max(self.min_deadline_s, DEADLINE_FACTOR * batch_ms * batches / 1000)

    def facts(self) -> DetectorFacts:
        with self._cond:
            waiting = [*self._running, *self._queue]
            return DetectorFacts(
                now_s=time.monotonic(),
                thread_alive=self._thread.is_alive() and not self._closed,
                waiting=len(waiting),
                oldest_waiting_s=min((r.submitted for r in waiting), default=None),
                last_success_s=self._last_success_s,
                failures_since_success=self._failures_in_row,
                last_failure_s=self._last_failure_s,
                last_error=self._last_error,
            )

    # -- the inference thread ------------------------------------------------------------------
    def _supervise(self) -> None:
        backoff = RESTART_BACKOFF_S[0]
        while True:
            try:
                self._serve()
                return  # shut down
            except BaseException as exc:
                log.exception("detector thread died; failing its detections and restarting")
                with self._cond:
                    held, self._running = self._running, []
                    self.restarts += 1
                self._note_failure(len(held) or 1, f"detector thread crashed: {exc!r}")
                for r in held:
                    if not r.future.done():
                        r.future.set_exception(DetectorCrashed(f"detector thread died: {exc!r}"))
                _notify(self._on_restart)
                if self._closed:
                    return
                time.sleep(backoff)
                backoff = min(RESTART_BACKOFF_S[1], backoff * 2)

    def _next_batch(self) -> list[_Request] | None:
        """The oldest request and those waiting with it for the same model and frame size."""
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            first = self._queue.popleft()
            # Held from the moment it leaves the queue: if anything below raises, the
            # supervisor fails these futures instead of leaving them pending for ever.
            self._running = batch = [first]
            rest = deque[_Request]()
            for req in self._queue:
                same = req.label == first.label and req.image.shape == first.image.shape
                (batch if same and len(batch) < self.max_batch else rest).append(req)
            self._queue = rest
            self._running = [r for r in batch if r.future.set_running_or_notify_cancel()]
            return self._running

    def _serve(self) -> None:
        while (live := self._next_batch()) is not None:
            if not live:
                continue
            label = live[0].label
            started = time.monotonic()
            try:
                found = self.detectors[label].detect([r.image for r in live])
                if len(found) != len(live):
                    raise RuntimeError(f"{label} returned {len(found)} results for {len(live)}")
            except Exception as exc:
                # Once per run of failures: a broken model must not flood the log at frame rate
                # (the worker's health says it is failing, and when it recovers).
                level = logging.WARNING if self._failures_in_row == 0 else logging.DEBUG
                log.log(level, "detection on %s failed for %d frame(s): %r", label, len(live), exc)
                with self._cond:
                    self._running = []
                self._note_failure(len(live), repr(exc))
                for r in live:
                    r.future.set_exception(exc)
                continue
            finished = time.monotonic()
            elapsed = finished - started
            with self._cond:
                self._running = []
                self.runs += len(live)
                self.batches += 1
                self.busy_s += elapsed
                self._last_success_s = finished
                self._failures_in_row = 0
            self.stats[label].observe(elapsed * 1000 / len(live))
            for r, dets in zip(live, found, strict=True):
                waited = (started - r.submitted) * 1000
                r.future.set_result(DetectOutput(label, dets, elapsed * 1000, waited))

    def _note_failure(self, n: int, error: str) -> None:
        with self._cond:
            self.failures += n
            self._failures_in_row += n
            self._last_failure_s = time.monotonic()
            self._last_error = error
        _notify(self._on_failure, n)

    def shutdown(self) -> None:
        with self._cond:
            self._closed = True
            for r in self._queue:
                r.future.cancel()
            self._queue.clear()
            self._cond.notify_all()
