"""The worker's detector pool: keyframes waiting together share one detector call, oldest first."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from cloud_worker.detector_pool import DetectorPool, PoolBusy
from mobieye.config import DetectorConfig
from mobieye.detector import UltralyticsDetector


@pytest.fixture(scope="module")
def pool(model_path: Path) -> DetectorPool:
    detector = UltralyticsDetector(DetectorConfig(model=str(model_path), imgsz=320))
    detector.load()
    p = DetectorPool({"nano@320": (detector, 25.5)}, max_pending=4, max_batch=4)
    yield p  # type: ignore[misc]
    p.shutdown()


def frame(data_dir: Path, index: int) -> np.ndarray:
    cap = cv2.VideoCapture(str(data_dir / "videos" / "TUD-Stadtmitte.mp4"))
    cap.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, image = cap.read()
    cap.release()
    assert ok
    return np.asarray(image, np.uint8)


def test_keyframes_waiting_together_share_one_call(pool: DetectorPool, data_dir: Path) -> None:
    images = [frame(data_dir, i * 20) for i in range(3)]
    before_runs, before_batches = pool.runs, pool.batches
    with pool._cond:  # hold the dispatcher so all three are waiting together
        futures = [pool.submit(image) for image in images]
    outputs = [f.result(timeout=30) for f in futures]
    assert pool.runs - before_runs == 3
    assert pool.batches - before_batches == 1
    assert all(o.model == "nano@320" for o in outputs)
    assert all(any(c == 0 for c in o.detections.class_id) for o in outputs)  # people
    # each result belongs to its own frame: the same frame detected alone agrees
    alone = pool.submit(images[2]).result(timeout=30)
    assert len(alone.detections) == len(outputs[2].detections)


def test_bounded_queue_refuses_past_max_pending(pool: DetectorPool, data_dir: Path) -> None:
    image = frame(data_dir, 0)
    with pool._cond:
        futures = [pool.submit(image) for _ in range(4)]
        with pytest.raises(PoolBusy):
            pool.submit(image)
    for f in futures:
        f.result(timeout=30)
    with pytest.raises(KeyError, match="unknown model"):
        pool.submit(image, "nope")


def test_batch_mates_behind_another_size_leave_the_queue_by_identity(
    pool: DetectorPool, data_dir: Path
) -> None:
    """Issue 17: with streams of different sizes queued, a batch-mate that is not at the head
    was removed by value (numpy ==) and the dispatcher died; no detection ran again."""
    big = [frame(data_dir, i * 10) for i in range(2)]  # 640x480
    small = [np.asarray(cv2.resize(frame(data_dir, 5 + i * 10), (480, 360)), np.uint8)
             for i in range(2)]  # fmt: skip
    order = [big[0], small[0], big[1], small[1]]  # sizes alternate: mates not at the head
    before = (pool.runs, pool.batches, pool.restarts)
    with pool._cond:
        futures = [pool.submit(image) for image in order]
    outputs = [f.result(timeout=60) for f in futures]
    assert pool.runs - before[0] == 4
    assert pool.batches - before[1] == 2  # one call per size
    assert pool.restarts == before[2] and pool._thread.is_alive()
    for image, out in zip(order, outputs, strict=True):  # each result is its own frame's
        alone = pool.submit(image).result(timeout=30)
        assert len(alone.detections) == len(out.detections)
        assert np.allclose(alone.detections.xyxy, out.detections.xyxy, atol=1.0)
    # and the pool goes on serving
    assert pool.submit(big[0]).result(timeout=30).model == "nano@320"


def test_same_size_frames_queued_behind_another_size(pool: DetectorPool, data_dir: Path) -> None:
    """Same shapes compare "ambiguously" under numpy ==: that used to kill the dispatcher too."""
    a, b = frame(data_dir, 0), frame(data_dir, 40)
    small = np.asarray(cv2.resize(frame(data_dir, 80), (320, 240)), np.uint8)
    with pool._cond:
        futures = [pool.submit(small), pool.submit(a), pool.submit(small), pool.submit(b)]
    for f in futures:
        f.result(timeout=60)
    assert pool._thread.is_alive()


def test_cancelled_detection_leaves_the_queue(pool: DetectorPool, data_dir: Path) -> None:
    image = frame(data_dir, 0)
    with pool._cond:
        futures = [pool.submit(image) for _ in range(4)]
        pool.cancel(futures[1])
        assert pool.pending == 3  # its slot is free at once, not when the thread reaches it
    assert futures[1].cancelled()
    for i in (0, 2, 3):
        futures[i].result(timeout=30)


def test_deadline_is_a_few_inference_waits_with_a_floor(pool: DetectorPool) -> None:
    assert pool.deadline_s() >= pool.min_deadline_s
    stats = pool.stats["nano@320"]
    mean, var = stats.mean_ms, stats.var_ms2
    try:
        stats.mean_ms, stats.var_ms2 = 500.0, 0.0  # a slow model: the bound follows it
        assert pool.deadline_s() > 5.0
    finally:
        stats.mean_ms, stats.var_ms2 = mean, var
