"""A stream's status on the worker, with a clock the test turns: no sockets, no sleeps."""

from __future__ import annotations

from cloud_worker.stream_status import Processing, StreamStatus
from mobieye.clock import Clocks, FrameClock
from mobieye.fleet.payloads import Command
from mobieye.messages import Box, Control, Hello, ModelInfo, Result, Timings
from mobieye.tracking import AssignmentEvents


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def status(clock: Clock) -> StreamStatus:
    return StreamStatus("cam", 100.0, FrameClock(3600), Clocks(monotonic=clock, wall=clock))


def result(seq: int, detect_seq: int | None, *track_ids: int) -> Result:
    boxes = [Box(xyxy=(0.1, 0.1, 0.2, 0.3), cls=0, label="person", score=0.9, track_id=t)
             for t in track_ids]  # fmt: skip
    return Result(seq=seq, pts=seq * 3600, source="track", detect_seq=detect_seq, model="m",
                  width=640, height=480, boxes=boxes, timings=Timings())  # fmt: skip


MODELS = [ModelInfo(label="m", accuracy=1.0, mean_ms=10.0, std_ms=1.0)]
PROCESSING = Processing(model="m", keyframe_interval=6, detector_runs=0)


def test_stats_cover_one_period_each() -> None:
    clock = Clock()
    s = status(clock)
    for seq in range(50):
        s.on_frame(damaged=seq == 7)
        s.on_result(result(seq, (seq // 10) * 10), "track")
    s.on_latency([10.0, 20.0, 30.0])
    clock.t += 2.0
    stats = s.stream_stats("w1", Processing("m", 6, detector_runs=5), uplink_bytes=50_000)
    assert stats.fps == 25.0 and stats.damaged_frames == 1
    assert stats.detector_fraction == 0.1  # 5 detections over 50 results
    assert stats.box_age_frames is not None and stats.box_age_frames.max == 9
    assert stats.latency_ms is not None and stats.latency_ms.p50 == 20.0
    assert stats.uplink_kbps == 200.0  # 50 kB in 2 s
    clock.t += 1.0
    quiet = s.stream_stats("w1", Processing("m", 6, detector_runs=5), uplink_bytes=50_000)
    assert quiet.fps == 0.0 and quiet.latency_ms is None and quiet.box_age_frames is None
    assert quiet.detector_fraction == 0.0 and quiet.uplink_kbps == 0.0


def test_box_age_is_none_before_the_first_detection() -> None:
    s = status(Clock())
    assert s.on_result(result(3, None), "first") is None
    assert s.on_result(result(9, 4), "track") == 5


def test_worker_stats_say_what_share_the_slot_skipped() -> None:
    s = status(Clock())
    for _ in range(10):
        s.on_frame(damaged=False)
    s.on_dequeued(4.0)
    s.on_dequeued(6.0)
    ws = s.worker_stats(MODELS, streams=2, dropped=3)
    assert ws.dropped_ratio == 0.3 and ws.queue_ms == 5.0 and ws.streams == 2
    assert s.worker_stats(MODELS, streams=2, dropped=3).dropped_ratio is None  # no new frames


def test_controller_steps_and_hello() -> None:
    clock = Clock()
    s = status(clock)
    assert s.on_control(Control(model="m")) is None  # no level: not a controller step
    step = s.on_control(Control(level=2, fps=15.0, reason="latency p95 over the SLA"))
    assert step is not None and step.at == 100.0 and s.controller == step
    assert not s.on_hello(Hello(stream_id="cam", frame_ticks=3600, failovers=1,
                                previous_worker="w0"))  # fmt: skip
    assert s.on_hello(Hello(stream_id="cam", frame_ticks=3000))
    assert s.clock.ticks == 3000
    stats = s.stream_stats("w1", PROCESSING, None)
    assert stats.decisions == [step] and stats.controller == step
    assert s.stream_stats("w1", PROCESSING, None).decisions == []  # each step once


def test_commands_keep_the_sla_and_name_what_they_set() -> None:
    s = status(Clock())
    assert s.on_command(Command(sla_ms=50.0, keyframe_interval=4)) == [
        "sla_ms",
        "keyframe_interval",
    ]
    state = s.settings_state("w1", PROCESSING, ["sla_ms"])
    assert state.sla_ms == 50.0 and state.changed == ["sla_ms"] and state.model == "m"


def test_events_for_new_and_ended_tracks() -> None:
    clock = Clock()
    s = status(clock)
    new = s.events(result(1, 1, 7, 8), AssignmentEvents(new=[7, 8], ended=[]))
    assert [(e.type, e.track_id) for e in new] == [("new", 7), ("new", 8)]
    assert s.events(result(2, 1, 7, 8), None) == []  # tracked frames: no events
    ended = s.events(result(3, 3, 7), AssignmentEvents(new=[], ended=[8]))
    assert [(e.type, e.track_id, e.box) for e in ended] == [("end", 8, [0.1, 0.1, 0.2, 0.3])]


def test_sla_pressure_reads_the_edge_s_latency_once_it_reports() -> None:
    s = status(Clock())  # SLA 100 ms
    assert s.sla_pressure() is None  # nothing to judge yet
    for seq in range(20):
        s.on_result(result(seq, 0).model_copy(update={"timings": Timings(total_ms=25.0)}), "t")
    assert s.sla_pressure() == 0.5  # the worker's 25 ms against its half of the SLA
    s.on_latency([90.0] * 20)  # frames queued before decoding: only the edge sees them
    assert s.sla_pressure() == 0.9
