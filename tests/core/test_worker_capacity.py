"""A worker's capacity at the SLA and its overload governor: pure figures, no sockets."""

from __future__ import annotations

import pytest

from mobieye.capacity import (
    MAX_STRETCH,
    MIN_PERIOD_FRAMES,
    PRIOR_FRAME_CPU_MS,
    CapacityMeter,
    LoadSample,
    next_stretch,
    pressure,
    pressure_of,
    streams_at_sla,
)
from mobieye.config import KeyframeConfig
from mobieye.keyframe_policy import stretched


def test_capacity_is_bounded_by_the_cores_and_by_the_one_inference_thread() -> None:
    # 6 ms of CPU per frame at 30 fps: 0.18 cores a stream; 2 cores at 0.8 hold 8.
    assert streams_at_sla(2, 30, 6.0, 1.0) == 8
    assert streams_at_sla(1, 30, 6.0, 1.0) == 4  # taskset to one core: half
    # A slow detector on every 5th frame: 12 ms of inference thread per frame at 30 fps.
    assert streams_at_sla(16, 30, 6.0, 12.0) == 2
    assert streams_at_sla(2, 30, 500.0, 1.0) == 1  # never 0: one stream, judged by its latency
    assert streams_at_sla(64, 30, 0.01, 0.0) == 256  # the ceiling
    with pytest.raises(ValueError):
        streams_at_sla(0, 30, 6.0, 1.0)


def test_the_prior_holds_until_a_period_has_served_enough_frames() -> None:
    meter = CapacityMeter(cores=2, detect_ms=20.0, detect_fraction=0.2)
    prior = meter.capacity()
    assert prior.basis == "prior"
    assert prior.cpu_ms_per_frame == pytest.approx(PRIOR_FRAME_CPU_MS + 4.0)
    meter.observe(LoadSample(1.0, 0.5, 0.1, MIN_PERIOD_FRAMES - 1))
    assert meter.capacity().basis == "prior"  # too few frames to say anything per frame
    meter.observe(LoadSample(1.0, 0.9, 0.3, 60), fps=30)  # two streams: 15 ms CPU per frame
    measured = meter.capacity()
    assert measured.basis == "measured"
    assert measured.cpu_ms_per_frame == pytest.approx(15.0)
    assert measured.detector_ms_per_frame == pytest.approx(5.0)
    assert measured.streams == streams_at_sla(2, 30, 15.0, 5.0) == 3


def test_idle_cost_is_not_charged_to_frames() -> None:
    meter = CapacityMeter(cores=2, detect_ms=10.0, detect_fraction=0.2)
    for _ in range(30):  # nothing served: the loop, MQTT and metrics cost 5% of a core
        meter.observe(LoadSample(1.0, 0.05, 0.0, 0))
    meter.observe(LoadSample(1.0, 0.05 + 0.15, 0.02, 30), fps=30)
    assert meter.capacity().cpu_ms_per_frame == pytest.approx(5.0, abs=0.1)


def test_measured_costs_follow_the_load_smoothly() -> None:
    meter = CapacityMeter(cores=2, detect_ms=10.0, detect_fraction=0.2)
    meter.observe(LoadSample(1.0, 0.15, 0.03, 30), fps=30)  # 5 ms per frame
    meter.observe(LoadSample(1.0, 0.45, 0.03, 30), fps=30)  # one period of 15
    cpu = meter.capacity().cpu_ms_per_frame
    assert 5.0 < cpu < 15.0  # one bad second moves the figure, doesn't replace it


def test_keyframes_stretch_under_pressure_and_relax_with_hysteresis() -> None:
    assert pressure([]) == 0.0
    assert pressure([0.3, pressure_of([150.0] * 20, 150.0) or 0]) == 1.0  # the worst stream
    s = 1.0
    for _ in range(20):
        s = next_stretch(s, pressure([0.2, 0.95]))
    assert s == MAX_STRETCH
    held = next_stretch(s, 0.7)  # between the thresholds: no flapping
    assert held == s
    for _ in range(20):
        s = next_stretch(s, 0.3)
    assert s == 1.0


def test_a_stretched_policy_spaces_every_rule_alike() -> None:
    kf = KeyframeConfig(interval=5, min_interval=2, max_interval=30, max_age_s=0.5)
    assert stretched(kf, 1.0) is kf
    s = stretched(kf, 2.0)
    assert (s.interval, s.min_interval, s.max_interval) == (10, 4, 60)
    assert s.max_age_s == pytest.approx(1.0)
    assert s.scene_change == kf.scene_change  # what it detects on is unchanged, only spacing
