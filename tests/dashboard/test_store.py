"""FleetStore on its own: real payload objects in, views out, with a clock the test controls."""

from __future__ import annotations

from typing import Any

import pytest

from mobieye.dashboard.store import FleetStore
from mobieye.fleet import topics
from mobieye.fleet.payloads import (
    ControllerDecision,
    LatencyMs,
    ObjectEvent,
    StreamState,
    StreamStats,
    WorkerState,
    worker_will,
)

P = "mobieye"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> FleetStore:
    return FleetStore(
        P, stale_after_s=5, forget_after_s=60, max_events=3, max_points=5, clock=clock
    )


def worker(store: FleetStore, wid: str = "w1", streams: int = 0) -> bool:
    state = WorkerState(
        id=wid, status="online", url="http://127.0.0.1:8000", capacity=4, streams=streams
    )
    return store.on_message(topics.worker_state(P, wid), state.to_bytes())


def stats(
    store: FleetStore, sid: str = "s1", wid: str = "w1", fps: float = 25.0, **more: Any
) -> bool:
    payload = StreamStats(
        stream=sid,
        worker=wid,
        fps=fps,
        latency_ms=LatencyMs(p50=40, p95=80),
        model="yolox_nano@416",
        keyframe_interval=6,
        detector_fraction=0.2,
        **more,
    )
    return store.on_message(topics.stream_stats(P, sid), payload.to_bytes())


def event(sid: str, track: int, kind: str = "new") -> ObjectEvent:
    return ObjectEvent(
        type=kind,  # type: ignore[arg-type]
        stream=sid,
        track_id=track,
        label="person",
        box=[0.1, 0.1, 0.2, 0.4],
        score=0.9,
        ts=1.0,
    )


def test_worker_online_then_offline_by_its_last_will(store: FleetStore) -> None:
    assert worker(store, streams=1)
    stats(store)
    (w,) = store.workers()
    assert (w.id, w.status, w.streams, w.capacity, w.stale) == ("w1", "online", 1, 4, False)
    assert store.streams()[0].worker_status == "online"

    topic, payload, retain = worker_will(P, "w1")
    assert retain and store.on_message(topic, payload)
    (w,) = store.workers()
    assert w.status == "offline" and not w.stale
    (s,) = store.streams()
    assert s.worker_status == "offline" and s.stale, "a dead worker's streams are stale"


def test_cleared_worker_state_forgets_the_worker(store: FleetStore) -> None:
    worker(store)
    assert store.on_message(topics.worker_state(P, "w1"), b"")
    assert store.workers() == [] and store.worker("w1") is None


def test_stats_make_a_stream_with_a_bounded_series(store: FleetStore, clock: Clock) -> None:
    for i in range(12):
        clock.now += 1
        assert stats(store, fps=float(i))
    s = store.stream("s1")
    assert s is not None
    assert (s.worker, s.fps, s.model, s.keyframe_interval) == ("w1", 11.0, "yolox_nano@416", 6)
    assert s.latency_ms is not None and (s.latency_ms.p50, s.latency_ms.p95) == (40, 80)
    assert s.detector_fraction == 0.2 and not s.stale
    series = store.series("s1")
    assert series is not None and len(series) == 5, "only the newest max_points are kept"
    assert [p.fps for p in series] == [7.0, 8.0, 9.0, 10.0, 11.0]
    assert series[-1].t == clock.now and series[-1].p95_ms == 80
    assert store.series("nope") is None and store.stream("nope") is None


def test_silent_streams_turn_stale_then_are_forgotten(store: FleetStore, clock: Clock) -> None:
    stats(store)
    clock.now += 4.9
    assert not store.streams()[0].stale
    clock.now += 0.2
    assert store.streams()[0].stale
    stats(store)
    assert not store.streams()[0].stale, "fresh stats revive it"
    clock.now += 61
    assert store.streams() == []


def test_malformed_payloads_are_counted_and_ignored(store: FleetStore) -> None:
    stats(store)
    before = store.streams()
    bad = [
        (topics.stream_stats(P, "s1"), b"{not json"),
        (topics.stream_stats(P, "s1"), b'{"stream": "s1", "worker": "w1", "fps": "fast"}'),
        (topics.stream_stats(P, "s1"), b'{"stream": "s1", "worker": "w1", "fps": -1}'),
        (topics.stream_stats(P, "s1"), StreamStats(stream="s2", worker="w1", fps=1).to_bytes()),
        (topics.worker_state(P, "w1"), b'{"id": "w1", "status": "sleeping"}'),
        (topics.stream_state(P, "s1"), b"[]"),
        (topics.events(P), b'{"type": "new", "stream": "s1"}'),
        (topics.events(P), b"\xff\xfe"),
    ]
    for topic, payload in bad:
        assert not store.on_message(topic, payload), payload
    assert store.counters.malformed == len(bad)
    assert store.counters.last_malformed is not None and "events" in store.counters.last_malformed
    assert store.streams() == before and store.workers() == [] and store.events() == []
    # Foreign topics and commands are no business of the store.
    assert not store.on_message("other/streams/s1/stats", b"{}")
    assert not store.on_message(topics.stream_set(P, "s1"), b'{"sla_ms": 150}')
    assert store.counters.ignored == 2 and store.counters.malformed == len(bad)


def test_ended_stream_is_removed_and_late_stats_do_not_revive_it(
    store: FleetStore, clock: Clock
) -> None:
    stats(store)
    assert store.on_message(topics.stream_state(P, "s1"), b"")  # the worker ended it
    assert store.streams() == [] and store.series("s1") is None
    assert not stats(store), "stats the worker sent just before the end are late"
    assert store.streams() == []
    assert stats(store, wid="w2"), "the same stream failing over to another worker is new"
    assert store.streams()[0].worker == "w2"
    ended = StreamState(stream="s1", worker="w2", status="ended")
    assert store.on_message(topics.stream_state(P, "s1"), ended.to_bytes())
    assert store.streams() == []
    clock.now += 6
    assert stats(store, wid="w2"), "a restart with the same id, later, is shown again"


def test_state_fills_in_before_stats_and_stats_win_after(store: FleetStore) -> None:
    state = StreamState(stream="s1", worker="w1", model="yolov5n@640", sla_ms=150)
    assert store.on_message(topics.stream_state(P, "s1"), state.to_bytes())
    s = store.stream("s1")
    assert s is not None
    assert (s.worker, s.model, s.sla_ms, s.fps, s.latency_ms) == (
        "w1",
        "yolov5n@640",
        150,
        None,
        None,
    )
    stats(store)
    s = store.stream("s1")
    assert s is not None and (s.model, s.sla_ms, s.fps) == ("yolox_nano@416", 150, 25.0)


def test_events_ring_drops_the_oldest(store: FleetStore) -> None:
    for track in range(5):
        sid = "s1" if track % 2 else "s2"
        assert store.on_message(topics.events(P), event(sid, track).to_bytes())
    assert [e.track_id for e in store.events()] == [4, 3, 2], "newest first, 3 kept"
    assert [e.track_id for e in store.events(limit=2)] == [4, 3]
    assert [e.track_id for e in store.events(stream="s1")] == [3]


def test_any_prefix_without_one(clock: Clock) -> None:
    store = FleetStore(clock=clock)
    payload = StreamStats(stream="s1", worker="w1", fps=5).to_bytes()
    assert store.on_message("site-a/fleet/streams/s1/stats", payload)
    assert [s.id for s in store.streams()] == ["s1"]


def decision(at: float, level: int, reason: str) -> ControllerDecision:
    return ControllerDecision(
        at=at, level=level, fps=[30.0, 20.0, 15.0][level], max_width=640,
        bitrate_kbps=[1500, 900, 600][level], reason=reason,
    )  # fmt: skip


def test_controller_steps_fill_the_series_and_the_timeline(store: FleetStore, clock: Clock) -> None:
    first = decision(999.5, 0, "model None -> yolox_nano@416 (budget 90 ms)")
    assert stats(store, uplink_kbps=800.0, controller=first, decisions=[first])
    clock.now += 1
    down = decision(1000.7, 1, "down to level 1: p95 130 ms, results 100%")
    assert stats(store, uplink_kbps=600.0, controller=down, decisions=[down])
    clock.now += 1
    assert stats(store, uplink_kbps=550.0, controller=down)  # no new step
    points = store.series("s1")
    assert points is not None
    assert [(p.uplink_kbps, p.target_fps, p.bitrate_kbps, p.level) for p in points] == [
        (800.0, 30.0, 1500, 0),
        (600.0, 20.0, 900, 1),
        (550.0, 20.0, 900, 1),
    ]
    timeline = store.timeline("s1")
    assert timeline is not None
    assert [(e.kind, e.level, e.t) for e in timeline] == [
        ("decision", 0, 999.5),
        ("decision", 1, 1000.7),
    ]
    assert timeline[1].text.startswith("down to level 1")
    view = store.stream("s1")
    assert view is not None
    assert (view.level, view.target_fps, view.bitrate_kbps, view.failovers) == (1, 20.0, 900, 0)


def test_failover_to_a_live_worker_keeps_the_history(store: FleetStore, clock: Clock) -> None:
    stats(store)
    clock.now += 1
    stats(store)
    assert store.on_message(topics.stream_state(P, "s1"), b"")  # w1 ended it (edge gone)
    clock.now += 2
    assert stats(store, wid="w2", failovers=1, previous_worker="w1")
    points, timeline = store.series("s1"), store.timeline("s1")
    assert points is not None and timeline is not None
    assert [p.worker for p in points] == ["w1", "w1", "w2"], "one series across workers"
    (entry,) = timeline
    assert (entry.kind, entry.from_worker, entry.worker) == ("failover", "w1", "w2")
    assert entry.text == "failover 1: w1 \u2192 w2"
    view = store.stream("s1")
    assert view is not None and (view.worker, view.failovers) == ("w2", 1)


def test_failover_from_a_dead_worker_and_back_to_the_same_one(store: FleetStore) -> None:
    stats(store)
    # w1 died: no end, just the next stats from w2.
    assert stats(store, wid="w2", failovers=1)
    # A fixed worker URL: the edge reconnects to the same worker; its count tells.
    assert stats(store, wid="w2", failovers=2, previous_worker="w2")
    timeline = store.timeline("s1")
    assert timeline is not None
    assert [(e.from_worker, e.worker) for e in timeline] == [("w1", "w2"), ("w2", "w2")]


def test_an_ended_stream_is_new_again_after_the_resume_window(clock: Clock) -> None:
    store = FleetStore(P, stale_after_s=5, resume_after_s=30, clock=clock)
    stats(store)
    assert store.on_message(topics.stream_state(P, "s1"), b"")
    clock.now += 31
    store.prune()
    assert stats(store, wid="w2")
    assert store.timeline("s1") == [] and len(store.series("s1") or []) == 1


def test_operator_settings_changes_are_in_the_timeline(store: FleetStore) -> None:
    def state(**kw: Any) -> bool:
        payload = StreamState(stream="s1", worker="w1", **kw)
        return store.on_message(topics.stream_state(P, "s1"), payload.to_bytes())

    assert state(model="m1", sla_ms=100.0, keyframe_interval=6)  # the stream's start
    assert state(model="m1", sla_ms=100.0, keyframe_interval=6, changed=["sla_ms"])  # no change
    # The policy tuned the interval meanwhile: not the operator's doing, not in the timeline.
    assert state(model="m2", sla_ms=50.0, keyframe_interval=5, changed=["sla_ms", "model"])
    assert state(model="m2", sla_ms=50.0, keyframe_interval=8, changed=["keyframe_interval"])
    timeline = store.timeline("s1")
    assert timeline is not None
    assert [e.text for e in timeline] == [
        "SLA 100 \u2192 50 ms; model m1 \u2192 m2",
        "keyframe interval 5 \u2192 8",
    ]


def test_timeline_is_bounded(clock: Clock) -> None:
    store = FleetStore(P, max_timeline=3, clock=clock)
    steps = [decision(990.0 + i, i % 3, f"step {i}") for i in range(5)]
    assert stats(store, decisions=steps, controller=steps[-1])
    timeline = store.timeline("s1")
    assert timeline is not None and [e.text for e in timeline] == ["step 2", "step 3", "step 4"]


def test_old_boxes_mark_a_stream_stale_even_while_frames_flow(store: FleetStore) -> None:
    """Frames arriving and results going out are activity; fresh boxes are the outcome."""
    from mobieye.fleet.payloads import BoxAge

    worker(store)
    stats(store, box_age_frames=BoxAge(p50=3, p95=8, max=11))
    view = store.stream("s1")
    assert view is not None and not view.boxes_stale and not view.stale
    assert (store.series("s1") or [])[-1].box_age_p95 == 8
    stats(store, box_age_frames=BoxAge(p50=200, p95=240, max=250))
    view = store.stream("s1")
    assert view is not None and view.boxes_stale and not view.stale


def test_a_worker_that_cannot_detect_is_shown_with_its_reason(store: FleetStore) -> None:
    state = WorkerState(id="w9", status="online", url="http://127.0.0.1:8000", capacity=4,
                        problem="the last 3 detections failed: boom")  # fmt: skip
    store.on_message(topics.worker_state(P, "w9"), state.to_bytes())
    (view,) = [w for w in store.workers() if w.id == "w9"]
    assert view.problem and "boom" in view.problem and not view.has_room
