"""A stream's per-frame work, driven with a scripted detector through the Detector protocol:
no sockets, no model. What a frame's result says must follow what the detector did."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from cloud_worker.detector_pool import DetectorPool
from cloud_worker.processor import DecodedFrame, StepOutcome, StreamProcessor
from mobieye.config import KeyframeConfig
from mobieye.detections import Detections

H, W = 120, 160


class Scripted:
    """One person box per frame, or a hang while ``hang`` is set."""

    name = "scripted"
    names = {0: "person"}

    def __init__(self) -> None:
        self.hang = threading.Event()
        self.release = threading.Event()
        self.calls = 0

    def load(self) -> None:
        pass

    def detect(self, images: list[np.ndarray]) -> list[Detections]:
        self.calls += 1
        if self.hang.is_set():
            self.release.wait(30)
        box = np.array([[40, 30, 80, 90]], np.float32)
        return [Detections(box, np.array([0.9]), np.array([0])) for _ in images]


@pytest.fixture
def detector() -> Scripted:
    return Scripted()


@pytest.fixture
def pool(detector: Scripted) -> DetectorPool:
    p = DetectorPool({"s": (detector, 1.0)}, min_deadline_s=0.2)
    yield p  # type: ignore[misc]
    detector.release.set()
    p.shutdown()


def frame(seq: int, t: float) -> DecodedFrame:
    gray = np.full((H, W), 100, np.uint8)
    gray[30:90, 40 + seq % 3 : 80 + seq % 3] = 200  # a bright "person", barely moving
    return DecodedFrame(seq=seq, pts=seq * 3000, gray=gray,
                        bgr=lambda: np.dstack([gray] * 3), received_s=t)  # fmt: skip


def run(proc: StreamProcessor, seqs: range, wait_s: float = 0.0) -> list[StepOutcome]:
    out = []
    for seq in seqs:
        out.append(proc.step(frame(seq, seq / 30)))
        if wait_s:
            threading.Event().wait(wait_s)
    return out


def test_results_carry_completed_detections_and_their_age(pool: DetectorPool) -> None:
    proc = StreamProcessor("s1", KeyframeConfig(adaptive=False), pool)
    outs = run(proc, range(30), wait_s=0.02)
    detected = [o for o in outs if o.result.source == "detect"]
    assert detected, "no detection was harvested"
    assert proc.detector_runs == len(detected) <= proc.detections_submitted
    last = outs[-1].result
    assert last.detect_seq is not None and 0 <= last.seq - last.detect_seq <= 12
    assert len(last.boxes) == 1 and last.boxes[0].label == "person"


def test_a_late_detection_is_abandoned_and_detected_again(
    pool: DetectorPool, detector: Scripted
) -> None:
    abandoned: list[int] = []
    proc = StreamProcessor("s1", KeyframeConfig(adaptive=False), pool,
                           on_abandoned=lambda: abandoned.append(1))  # fmt: skip
    run(proc, range(10), wait_s=0.02)
    runs = proc.detector_runs
    detector.hang.set()
    outs = run(proc, range(10, 40), wait_s=0.02)  # 0.6 s: past the 0.2 s deadline
    assert proc.detections_abandoned >= 1 and len(abandoned) == proc.detections_abandoned
    assert any(o.decision.reason == "retry" for o in outs)
    assert proc.detector_runs == runs  # nothing completed, nothing counted
    ages = [o.result.seq - (o.result.detect_seq or 0) for o in outs]
    assert ages[-1] > 12  # the boxes are visibly getting old
    detector.hang.clear()
    detector.release.set()
    outs = run(proc, range(40, 60), wait_s=0.02)
    assert proc.detector_runs > runs  # detecting again once the detector answers
    assert outs[-1].result.seq - (outs[-1].result.detect_seq or 0) <= 12


def test_conventional_wait_is_bounded(pool: DetectorPool, detector: Scripted) -> None:
    cfg = KeyframeConfig(interval=1, min_interval=1, wait_for_detection=True, adaptive=False)
    proc = StreamProcessor("s1", cfg, pool)
    assert run(proc, range(2))[-1].result.source == "detect"
    detector.hang.set()
    out = proc.step(frame(2, 2 / 30))  # returns after the deadline instead of hanging
    assert out.result.source != "detect" and proc.detections_abandoned == 1


def test_resolution_change_rescales_tracks(pool: DetectorPool) -> None:
    proc = StreamProcessor("s1", KeyframeConfig(adaptive=False), pool)
    run(proc, range(10), wait_s=0.02)
    small = np.full((H // 2, W // 2), 100, np.uint8)
    resized = DecodedFrame(seq=10, pts=30000, gray=small,
                           bgr=lambda: np.dstack([small] * 3), received_s=10 / 30)  # fmt: skip
    out = proc.step(resized)
    assert out.result.width == W // 2 and out.result.height == H // 2
    assert all(0 <= v <= 1 for b in out.result.boxes for v in b.xyxy)


def test_streams_start_on_the_model_the_worker_s_load_allows() -> None:
    heavy, light = Scripted(), Scripted()
    pool = DetectorPool({"heavy": (heavy, 2.0), "light": (light, 1.0)}, min_deadline_s=0.2)
    try:
        pool.stats["heavy"].observe(60.0)  # ms per frame, as profiled
        pool.stats["light"].observe(10.0)
        kf = KeyframeConfig(adaptive=False, interval=6)  # 5 detections/s at 30 fps
        first = StreamProcessor("s1", kf, pool)
        assert first.model == "heavy"  # 30% of the detector
        others = [StreamProcessor(f"s{i}", kf, pool) for i in range(2, 5)]
        # Four streams on 'heavy' would need 120% of it: every one that has not been told a
        # model moves to 'light', and its detections really run there.
        assert {p.model for p in [first, *others]} == {"light"}
        run(first, range(0, 12), wait_s=0.01)
        assert light.calls > 0 and heavy.calls == 0
        others[0].configure(model="heavy")  # its edge chose: that holds whatever the load
        assert others[0].model == "heavy"
        for p in others:
            p.close()
        p.close()  # closing twice detaches once
        assert pool.streams == 1 and first.model == "heavy"
        first.close()
    finally:
        pool.shutdown()


def test_the_worker_s_stretch_thins_every_stream_s_keyframes_but_not_conventional(
    pool: DetectorPool,
) -> None:
    kf = KeyframeConfig(adaptive=False, interval=4, min_interval=2, max_age_s=10.0)
    plain = StreamProcessor("plain", kf, pool)
    run(plain, range(60), wait_s=0.005)
    pool.keyframe_stretch = 3.0
    thinned = StreamProcessor("thinned", kf, pool)
    run(thinned, range(60), wait_s=0.005)
    assert plain.detections_submitted >= 12  # every 4th frame
    assert thinned.detections_submitted <= plain.detections_submitted / 2
    assert thinned.keyframe.interval == 4  # its own policy is kept: the stretch relaxes away
    conventional = KeyframeConfig(interval=1, min_interval=1, wait_for_detection=True,
                                  adaptive=False)  # fmt: skip
    waits = StreamProcessor("conventional", conventional, pool)
    run(waits, range(10))
    assert waits.detections_submitted == 10
