"""The worker's measured load: its capacity in streams and its keyframe stretch, each second.

Glue between the live worker and the pure figures of mobieye/capacity.py: reads the process's
CPU time, the detector's busy time and the results each stream sent, feeds the meter, runs the
overload governor and sets the stretch on the detector pool that every stream's processor reads.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, Protocol

from cloud_worker.detector_pool import DetectorPool
from mobieye.capacity import (
    CEILING,
    Admission,
    Capacity,
    CapacityMeter,
    LoadSample,
    next_stretch,
    pressure,
)

log = logging.getLogger(__name__)

START_FPS = 30.0  # what a capacity figure assumes before any stream has run


class ServedStream(Protocol):
    @property
    def results_sent(self) -> int: ...
    def sla_pressure(self) -> float | None: ...


CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def usable_cores(cpu_max: Path = CGROUP_CPU_MAX) -> float:
    """The cores this process may use: its affinity (taskset, cpusets), narrowed by a cgroup v2
    CPU quota (a container's or pod's CPU limit, which affinity doesn't show)."""
    try:
        cores = float(len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        cores = float(os.cpu_count() or 1)
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(0.1, int(quota) / int(period)))
    except (OSError, ValueError):
        pass  # no cgroup v2 limit here
    return cores


class WorkerLoad:
    def __init__(
        self, pool: DetectorPool, interval: int, detector_threads: int,
        fixed_streams: int | None = None, cores: float | None = None,
    ) -> None:  # fmt: skip
        """``fixed_streams``: the operator's ``worker.max_streams``, which overrides the measured
        figure for admission (it is still measured and shown)."""
        self.pool = pool
        self.fixed_streams = fixed_streams
        self.cores = cores if cores is not None else usable_cores()
        default = pool.stats[pool.default]
        self.meter = CapacityMeter(
            self.cores, default.mean_ms, 1 / max(1, interval), START_FPS, detector_threads
        )
        self.stretch = 1.0
        self.utilisation = 0.0
        self._cpu = time.process_time()
        self._wall = time.monotonic()
        self._busy = pool.busy_s
        self._sent: dict[str, int] = {}

    @property
    def basis(self) -> Literal["fixed", "measured", "prior"]:
        return "fixed" if self.fixed_streams is not None else self.capacity().basis

    def capacity(self) -> Capacity:
        return self.meter.capacity(ceiling=CEILING)

    def admits(self) -> int:
        """Streams this worker takes: the operator's figure if one is set, else the measured."""
        return self.fixed_streams if self.fixed_streams is not None else self.capacity().streams

    def admission(self) -> Admission:
        return Admission(
            self.admits(), self.basis, round(self.utilisation * self.cores, 3),
            round(self.stretch, 3),
        )  # fmt: skip

    def tick(self, streams: Mapping[str, ServedStream]) -> None:
        """One period: observe its costs, then stretch or relax every stream's keyframes."""
        cpu, wall, busy = time.process_time(), time.monotonic(), self.pool.busy_s
        span = wall - self._wall
        frames, active = 0, 0
        sent = {sid: s.results_sent for sid, s in streams.items()}
        for sid, n in sent.items():
            done = n - self._sent.get(sid, 0)  # a new stream: all it sent
            frames += max(0, done)
            active += done > 0
        self._sent = sent
        sample = LoadSample(span, cpu - self._cpu, busy - self._busy, frames)
        self._cpu, self._wall, self._busy = cpu, wall, busy
        if span <= 0:
            return
        fps = frames / span / active if active else None
        self.meter.observe(sample, fps)
        self.utilisation = sample.cpu_s / span / self.cores
        near = [p for s in streams.values() if (p := s.sla_pressure()) is not None]
        now = pressure(near)
        before, self.stretch = self.stretch, next_stretch(self.stretch, now)
        self.pool.keyframe_stretch = self.stretch
        if self.stretch != before and (self.stretch == 1.0 or before == 1.0):
            log.warning(
                "keyframes %s: pressure %.2f (CPU %.0f%% of %g cores, worst p95 %s of its SLA)",
                f"stretched x{self.stretch:.2f}" if self.stretch > 1 else "back to each "
                "stream's own policy", now, 100 * self.utilisation, self.cores,
                f"{max(near):.0%}" if near else "-",
            )  # fmt: skip
