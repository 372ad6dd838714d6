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
