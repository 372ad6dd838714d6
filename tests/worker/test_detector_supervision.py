"""The detector pool's inference thread is supervised and its health judged from outcomes.

These drive the real pool through the Detector protocol with detectors that misbehave on
purpose: one that kills the inference thread, one that raises, one that hangs.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import CancelledError

import numpy as np
import pytest

from cloud_worker.detector_health import DetectorFacts, detector_problem
from cloud_worker.detector_pool import DetectorCrashed, DetectorPool
from mobieye.detections import Detections

IMAGE = np.zeros((48, 64, 3), np.uint8)


class ThreadKiller(BaseException):
    """Not an Exception: escapes the per-batch handler, as a dying thread would."""


class Misbehaving:
    name = "misbehaving"
    names = {0: "person"}

    def __init__(self) -> None:
        self.mode = "ok"
        self.calls = 0
        self.release = threading.Event()

    def load(self) -> None:
        pass

    def detect(self, images: list[np.ndarray]) -> list[Detections]:
        self.calls += 1
        if self.mode == "kill":
            self.mode = "ok"
            raise ThreadKiller("simulated crash")
        if self.mode == "raise":
            raise RuntimeError("simulated inference error")
        if self.mode == "hang":
            self.release.wait(30)
        return [Detections.empty() for _ in images]


@pytest.fixture
def detector() -> Misbehaving:
    return Misbehaving()


@pytest.fixture
def pool(detector: Misbehaving) -> DetectorPool:
    restarts: list[int] = []
    p = DetectorPool({"m": (detector, 1.0)}, max_pending=4, on_restart=lambda: restarts.append(1))
    p.restarts_seen = restarts  # type: ignore[attr-defined]
    yield p  # type: ignore[misc]
    detector.release.set()
    p.shutdown()


def problem(pool: DetectorPool, stall_s: float = 0.3) -> str | None:
    return detector_problem(pool.facts(), stall_s)


def test_a_dead_thread_is_logged_restarted_counted_and_fails_its_futures(
    pool: DetectorPool, detector: Misbehaving, caplog: pytest.LogCaptureFixture
) -> None:
    detector.mode = "kill"
    with caplog.at_level(logging.ERROR, logger="cloud_worker.detector_pool"):
        future = pool.submit(IMAGE)
        with pytest.raises(DetectorCrashed):
            future.result(timeout=5)  # at once, not a hang
    assert "Traceback" in caplog.text or any(r.exc_info for r in caplog.records)
    assert "ThreadKiller" in caplog.text
    assert pool.restarts == 1 and pool.restarts_seen == [1]  # type: ignore[attr-defined]
    # restarted: the next detection completes
    assert len(pool.submit(IMAGE).result(timeout=5).detections) == 0
    assert pool._thread.is_alive()
    assert problem(pool) is None


def test_only_failures_make_the_worker_unable_to_detect(
    pool: DetectorPool, detector: Misbehaving
) -> None:
    assert problem(pool) is None
    detector.mode = "raise"
    for _ in range(3):
        with pytest.raises(RuntimeError, match="simulated"):
            pool.submit(IMAGE).result(timeout=5)
    said = problem(pool)
    assert said is not None and "last 3 detections failed" in said and "simulated" in said
    detector.mode = "ok"
    pool.submit(IMAGE).result(timeout=5)
    assert problem(pool) is None  # one success clears it


def test_a_hung_detector_is_reported_while_detections_wait(
    pool: DetectorPool, detector: Misbehaving
) -> None:
    pool.submit(IMAGE).result(timeout=5)
    detector.mode = "hang"
    calls = detector.calls
    futures = [pool.submit(IMAGE)]
    while detector.calls == calls:  # the first is inside the detector; the second queues
        time.sleep(0.01)
    futures.append(pool.submit(IMAGE))
    time.sleep(0.5)
    said = problem(pool)
    assert said is not None and "no detection completed" in said and "2 wait" in said
    # a stream gives up on its detection: it leaves the queue at once
    pool.cancel(futures[1])
    with pytest.raises(CancelledError):
        futures[1].result(timeout=0)
    assert pool.pending == 0
    detector.mode = "ok"
    detector.release.set()
    futures[0].result(timeout=5)
    assert problem(pool) is None


def test_a_shut_down_pool_is_not_alive() -> None:
    p = DetectorPool({"m": (Misbehaving(), 1.0)})
    p.shutdown()
    p._thread.join(5)
    assert detector_problem(p.facts(), 1.0) == "the detector thread is not running"


# -- the judgement alone ---------------------------------------------------------------------
def test_idle_worker_is_fine() -> None:
    assert detector_problem(DetectorFacts(now_s=100.0, thread_alive=True), 5.0) is None


def test_waiting_long_with_recent_completions_is_fine() -> None:
    # the oldest waited long but others completed recently: busy, not broken
    facts = DetectorFacts(now_s=100.0, thread_alive=True, waiting=1, oldest_waiting_s=90.0,
                          last_success_s=99.0)  # fmt: skip
    assert detector_problem(facts, 5.0) is None


def test_never_completed_while_waiting() -> None:
    facts = DetectorFacts(now_s=100.0, thread_alive=True, waiting=3, oldest_waiting_s=90.0)
    said = detector_problem(facts, 5.0)
    assert said is not None and "ever" in said and "3 wait" in said


def test_old_failures_are_forgotten() -> None:
    facts = DetectorFacts(now_s=100.0, thread_alive=True, failures_since_success=9,
                          last_failure_s=80.0, last_error="boom")  # fmt: skip
    assert detector_problem(facts, 5.0) is None
    recent = DetectorFacts(now_s=100.0, thread_alive=True, failures_since_success=9,
                           last_failure_s=99.0, last_error="boom")  # fmt: skip
    assert "boom" in (detector_problem(recent, 5.0) or "")


def test_a_long_error_is_cut_to_fit_the_workers_mqtt_state() -> None:
    from mobieye.fleet.payloads import WorkerState

    facts = DetectorFacts(now_s=100.0, thread_alive=True, failures_since_success=5,
                          last_failure_s=99.0, last_error="x" * 5000)  # fmt: skip
    said = detector_problem(facts, 5.0)
    assert said is not None and len(said) < 400
    WorkerState(id="w", status="online", problem=said)  # valid: the presence loop survives
