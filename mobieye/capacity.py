"""How many streams a worker holds at its SLA, and how far keyframes stretch before it breaks.

Corun-style: capacity is not a constant in a config file but a figure the worker measures for
its own models on its own runtime and cores. Each second the worker hands :class:`CapacityMeter`
what the period cost (process CPU, detector busy time, frames served); the meter keeps
exponentially weighted per-frame costs and turns them into streams at the SLA for the frame rate
its streams run at. Until enough frames have been served, a prior stands in: the profiled
detector time (``mobieye models profile``) plus the per-frame path measured by py-spy (README).

:func:`next_stretch` is the worker-wide overload governor: when any stream's recent p95 nears
its SLA, every stream's keyframe interval stretches by the same factor (keyframes shared
fairly), before a p95 breaks; it relaxes with hysteresis once the pressure is gone.

Pure: no clocks, no I/O; the worker feeds facts in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from mobieye.stats import percentile

# The per-frame path without the detector (RTP, VP8 decode, luma, tracking, messages), CPU ms:
# the py-spy stage table (README) on the 2-core Xeon, 640x480 at 30 fps.
PRIOR_FRAME_CPU_MS = 3.0
HEADROOM = 0.8  # the share of the cores streams may fill: the rest absorbs bursts (GC, I-frames)
MIN_PERIOD_FRAMES = 10  # a period with fewer frames says more about idle cost than per frame
EWMA_ALPHA = 0.2
CEILING = 256  # never advertise more than the config allows a fixed figure to be

# The governor: a stream whose edge hasn't reported latency yet is judged on the worker's own
# (frame decoded -> result sent), which may take this share of the end-to-end SLA.
WORKER_SLA_SHARE = 0.5
STRETCH_AT = 0.85  # pressure at which keyframes stretch
RELAX_AT = 0.6  # ... and below which they relax
STRETCH_STEP = 1.25
MAX_STRETCH = 4.0


@dataclass(frozen=True)
class LoadSample:
    """One period of the worker: what it served and what that cost."""

    wall_s: float
    cpu_s: float  # process CPU (every thread: decode, tracking, detector)
    detector_s: float  # wall time inside the detector (one inference thread)
    frames: int


@dataclass(frozen=True)
class Capacity:
    streams: int
    fps: float  # per stream, the rate the figure assumes
    cpu_ms_per_frame: float
    detector_ms_per_frame: float
    cores: float
    basis: Literal["prior", "measured"]


@dataclass(frozen=True)
class Admission:
    """What a worker says of its room: in its MQTT state, on /healthz, to its admission."""

    admits: int  # streams it takes
    basis: Literal["fixed", "measured", "prior"] | None  # None: still loading
    cpu_cores: float | None = None  # process CPU last period, 1.0 = one core
    keyframe_stretch: float | None = None


def streams_at_sla(
    cores: float,
    fps: float,
    cpu_ms_per_frame: float,
    detector_ms_per_frame: float,
    headroom: float = HEADROOM,
    ceiling: int = CEILING,
) -> int:
    """Streams of ``fps`` that fit: bounded by all cores (each frame's CPU, detection included)
    and by the single inference thread (its wall time per frame). At least one: a worker that
    admits nothing serves nobody, and its latency says the rest."""
    if cores <= 0 or fps <= 0:
        raise ValueError(f"need cores > 0 and fps > 0, got {cores}, {fps}")
    bounds = [ceiling]
    if cpu_ms_per_frame > 0:
        bounds.append(math.floor(cores * headroom * 1000 / (fps * cpu_ms_per_frame)))
    if detector_ms_per_frame > 0:
        bounds.append(math.floor(headroom * 1000 / (fps * detector_ms_per_frame)))
    return max(1, min(bounds))


class CapacityMeter:
    """Per-frame costs from the worker's periods, and the streams they allow."""

    def __init__(
        self, cores: float, detect_ms: float, detect_fraction: float, fps: float = 30.0,
        detector_threads: int = 1,
    ) -> None:  # fmt: skip
        """``detect_ms``: the default model's profiled time per keyframe; ``detect_fraction``:
        the share of frames the keyframe policy starts at (1 / interval)."""
        self.cores = cores
        self.fps = fps
        det = detect_ms * detect_fraction
        self.cpu_ms = PRIOR_FRAME_CPU_MS + det * detector_threads
        self.detector_ms = det
        self.idle_cpu_s_per_s = 0.0  # what the process costs serving nothing (loop, MQTT)
        self.periods = 0  # periods measured with frames

    def observe(self, sample: LoadSample, fps: float | None = None) -> None:
        """One period; ``fps``: the mean input rate of the streams served in it."""
        if sample.wall_s <= 0:
            return
        if sample.frames == 0:
            rate = sample.cpu_s / sample.wall_s
            self.idle_cpu_s_per_s += EWMA_ALPHA * (rate - self.idle_cpu_s_per_s)
            return
        if sample.frames < MIN_PERIOD_FRAMES:
            return
        served_cpu = max(0.0, sample.cpu_s - self.idle_cpu_s_per_s * sample.wall_s)
        cpu_ms = served_cpu * 1000 / sample.frames
        det_ms = sample.detector_s * 1000 / sample.frames
        a = EWMA_ALPHA if self.periods else 1.0  # the first measured period replaces the prior
        self.cpu_ms += a * (cpu_ms - self.cpu_ms)
        self.detector_ms += a * (det_ms - self.detector_ms)
        if fps is not None and fps > 0:
            self.fps += a * (fps - self.fps)
        self.periods += 1

    def capacity(self, ceiling: int = CEILING) -> Capacity:
        streams = streams_at_sla(
            self.cores, self.fps, self.cpu_ms, self.detector_ms, ceiling=ceiling
        )
        return Capacity(
            streams=streams,
            fps=round(self.fps, 2),
            cpu_ms_per_frame=round(self.cpu_ms, 3),
            detector_ms_per_frame=round(self.detector_ms, 3),
            cores=self.cores,
            basis="measured" if self.periods else "prior",
        )


def pressure_of(latency_ms: Sequence[float], budget_ms: float) -> float | None:
    """A stream's recent p95 over its latency budget (1: at it); None without samples."""
    p95 = percentile(latency_ms, 95)
    return None if p95 is None else p95 / budget_ms


def pressure(streams: Sequence[float]) -> float:
    """How near the worker is to breaking an SLA: 1 is the limit; ``streams``: each stream's
    :func:`pressure_of` (the worst decides: no stream's p95 may break).

    Not CPU use: busy cores with latency well inside the SLA are a worker doing its job (its
    streams share the detector fairly, one keyframe in flight each); stretching then only cost
    accuracy (measured: 4 streams on one pinned core, p95 at 24% of the SLA, stretched x4 by
    CPU at 100%, F1 vs oracle 0.78)."""
    return max(streams, default=0.0)


def next_stretch(stretch: float, now: float) -> float:
    """The keyframe stretch after a period whose :func:`pressure` was ``now``."""
    if now >= STRETCH_AT:
        return min(MAX_STRETCH, stretch * STRETCH_STEP)
    if now < RELAX_AT and stretch > 1.0:
        return max(1.0, stretch / STRETCH_STEP)
    return stretch
