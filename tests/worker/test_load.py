"""The worker's measured load on a real detector pool (scripted detector, no sockets): its
admission figure, its overload governor and the cores it may count."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from cloud_worker.detector_pool import DetectorPool
from cloud_worker.load import WorkerLoad, usable_cores
from mobieye.detections import Detections


class Instant:
    name = "instant"
    names = {0: "person"}

    def load(self) -> None:
        pass

    def detect(self, images: list[np.ndarray]) -> list[Detections]:
        return [Detections.empty() for _ in images]


@dataclass
class FakeStream:
    results_sent: int = 0
    near: float | None = None  # p95 over the stream's SLA

    def sla_pressure(self) -> float | None:
        return self.near


@pytest.fixture
def pool() -> DetectorPool:
    p = DetectorPool({"m": (Instant(), 1.0)})
    p.stats["m"].observe(20.0)
    yield p  # type: ignore[misc]
    p.shutdown()


def test_one_stream_s_latency_near_its_sla_stretches_every_stream(
    pool: DetectorPool,
) -> None:
    load = WorkerLoad(pool, interval=5, detector_threads=1, cores=2)
    streams = {"a": FakeStream(), "b": FakeStream()}
    load.tick(streams)
    assert pool.keyframe_stretch == 1.0
    streams["b"].near = 0.9  # p95 at 90% of its SLA
    for _ in range(3):
        load.tick(streams)
    assert pool.keyframe_stretch > 1.5
    assert load.admission().keyframe_stretch == pytest.approx(pool.keyframe_stretch, abs=1e-3)
    streams["b"].near = 0.1
    for _ in range(20):
        load.tick(streams)
    assert pool.keyframe_stretch == 1.0


def test_admission_is_measured_unless_the_operator_fixed_it(pool: DetectorPool) -> None:
    measured = WorkerLoad(pool, interval=5, detector_threads=1, cores=2)
    room = measured.admission()
    assert room.basis == "prior" and room.admits == measured.capacity().streams >= 1
    fixed = WorkerLoad(pool, interval=5, detector_threads=1, fixed_streams=3,
                       cores=2)  # fmt: skip
    assert fixed.admission().admits == 3 and fixed.basis == "fixed"


def test_usable_cores_follow_a_container_s_cpu_quota(tmp_path: Path) -> None:
    limit = tmp_path / "cpu.max"
    limit.write_text("50000 100000\n")  # half a core
    assert usable_cores(limit) == 0.5
    limit.write_text("max 100000\n")
    assert usable_cores(limit) == usable_cores(tmp_path / "absent") >= 1
