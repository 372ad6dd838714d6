"""Topic names and payload models: pure, no broker."""

from __future__ import annotations

import json

import pytest

from mobieye.errors import MobiEyeError
from mobieye.fleet import topics
from mobieye.fleet.errors import PayloadError, TopicError
from mobieye.fleet.payloads import (
    Command,
    ObjectEvent,
    StreamStats,
    WorkerState,
    parse_payload,
    worker_will,
)


def test_builders() -> None:
    assert topics.worker_state("mobieye", "w-1") == "mobieye/workers/w-1/state"
    assert topics.worker_set("mobieye", "w-1") == "mobieye/workers/w-1/set"
    assert topics.stream_stats("a/b", "cam:0") == "a/b/streams/cam:0/stats"
    assert topics.stream_state("p/", "s.1") == "p/streams/s.1/state"
    assert topics.stream_set("p", "s_1") == "p/streams/s_1/set"
    assert topics.events("p") == "p/events"
    assert topics.all_worker_states("p") == "p/workers/+/state"
    assert topics.all_stream_stats("p") == "p/streams/+/stats"
    assert topics.everything("p") == "p/#"


@pytest.mark.parametrize("bad", ["", "a/b", "+", "#", "a b", "é", "x" * 129])
def test_invalid_ids_are_refused(bad: str) -> None:
    with pytest.raises(TopicError, match="invalid stream id"):
        topics.stream_stats("mobieye", bad)


def test_invalid_prefix_is_refused() -> None:
    with pytest.raises(TopicError):
        topics.events("a/+")


def test_parse() -> None:
    assert topics.parse("mobieye/workers/w1/state") == ("worker_state", "w1")
    assert topics.parse("a/b/streams/s1/stats", prefix="a/b") == ("stream_stats", "s1")
    assert topics.parse("mobieye/streams/s1/set", prefix="mobieye") == ("stream_set", "s1")
    assert topics.parse("mobieye/events", prefix="mobieye") == ("events", None)
    assert topics.parse("mobieye/events") == ("events", None)
    assert topics.parse("other/workers/w1/state", prefix="mobieye") is None
    assert topics.parse("mobieye/workers/w1/nope") is None
    assert topics.parse("mobieye/workers/w1") is None
    assert topics.parse("mobieye/x/workers/w1/state", prefix="mobieye") is None
    for build, kind in [
        (topics.worker_state, "worker_state"),
        (topics.worker_set, "worker_set"),
        (topics.stream_stats, "stream_stats"),
        (topics.stream_state, "stream_state"),
        (topics.stream_set, "stream_set"),
    ]:
        assert topics.parse(build("p/q", "id-1"), prefix="p/q") == (kind, "id-1")


def test_worker_state_round_trip_and_will() -> None:
    state = WorkerState(
        id="w1",
        status="online",
        url="http://127.0.0.1:8000",
        models=["yolo11n@416"],
        capacity=4,
        streams=1,
        load=0.25,
    )
    back = parse_payload(WorkerState, state.to_bytes(), topic="t")
    assert back == state
    assert back.has_room
    topic, payload, retain = worker_will("mobieye", "w1")
    assert topic == "mobieye/workers/w1/state" and retain
    assert json.loads(payload) == {"id": "w1", "status": "offline"}
    offline = parse_payload(WorkerState, payload)
    assert offline.status == "offline" and offline.streams == 0


def test_unknown_fields_are_ignored_but_types_are_strict() -> None:
    raw = b'{"stream": "s1", "worker": "w1", "fps": 30, "new_field": 1}'
    stats = parse_payload(StreamStats, raw)
    assert stats.fps == 30.0 and stats.latency_ms is None
    with pytest.raises(PayloadError) as info:
        parse_payload(StreamStats, b'{"stream": "s1", "worker": "w1", "fps": "30"}', "p/x")
    assert "p/x" in str(info.value) and "fps" in str(info.value)


def test_parse_errors_name_topic_and_problem() -> None:
    with pytest.raises(PayloadError) as info:
        parse_payload(WorkerState, b"not json", topic="mobieye/workers/w1/state")
    err = info.value
    assert isinstance(err, MobiEyeError)
    assert err.topic == "mobieye/workers/w1/state"
    assert "mobieye/workers/w1/state" in str(err) and "Invalid JSON" in str(err)

    with pytest.raises(PayloadError, match=r"status: Input should be 'online' or 'offline'"):
        parse_payload(WorkerState, b'{"id": "w1", "status": "busy"}', topic="t")
    with pytest.raises(PayloadError, match=r"id: Field required"):
        parse_payload(WorkerState, b'{"status": "online"}', topic="t")


def test_object_event() -> None:
    raw = json.dumps(
        {
            "type": "new",
            "stream": "s1",
            "track_id": 3,
            "label": "person",
            "box": [0.1, 0.2, 0.3, 0.4],
            "score": 0.9,
            "ts": 1.5,
        }
    )
    assert parse_payload(ObjectEvent, raw).box == [0.1, 0.2, 0.3, 0.4]
    with pytest.raises(PayloadError, match="box"):
        parse_payload(ObjectEvent, raw.replace("[0.1, 0.2, 0.3, 0.4]", "[0.1, 0.2]"))
    with pytest.raises(PayloadError, match="x1 <= x2"):
        parse_payload(ObjectEvent, raw.replace("[0.1, 0.2, 0.3, 0.4]", "[0.5, 0.2, 0.3, 0.4]"))


def test_command_refuses_typos_and_out_of_range() -> None:
    assert parse_payload(Command, b'{"sla_ms": 150}').sla_ms == 150.0
    assert parse_payload(Command, b'{"keyframe_interval": 4, "model": "m"}').keyframe_interval == 4
    with pytest.raises(PayloadError, match=r"sla: Extra inputs are not permitted"):
        parse_payload(Command, b'{"sla": 150}', topic="mobieye/streams/s1/set")
    with pytest.raises(PayloadError, match=r"sla_ms: Input should be greater than or equal to 10"):
        parse_payload(Command, b'{"sla_ms": 1}')
    with pytest.raises(PayloadError, match=r"keyframe_interval: Input should be a valid integer"):
        parse_payload(Command, b'{"keyframe_interval": 2.5}')
    with pytest.raises(PayloadError, match="at least one of"):
        parse_payload(Command, b"{}")
