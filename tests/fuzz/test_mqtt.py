"""MQTT payloads on every subscribed topic (mobieye/fleet/payloads.py) and what each subscriber
does with them: the dashboard's FleetStore (worker and stream states, stream stats, events),
the edge's WorkerDirectory (worker states) and the worker's FleetPresence (commands), all
behind the link's Handlers, as the processes wire them.

Properties: parse_payload returns the model or raises PayloadError naming the topic and the
problem; no subscriber lets anything but a MobiEyeError out (Handlers would log it as a bug);
the store's readers keep working whatever arrived, in whatever order."""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

import aiomqtt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from mobieye.config import MqttConfig, Settings, load_settings
from mobieye.dashboard.store import FleetStore
from mobieye.fleet import topics
from mobieye.fleet.directory import WorkerDirectory
from mobieye.fleet.errors import PayloadError
from mobieye.fleet.payloads import (
    Command,
    ObjectEvent,
    StreamState,
    StreamStats,
    WorkerState,
    parse_payload,
)
from mobieye.fleet.presence import FleetPresence
from mobieye.messages import Control
from mobieye.mqtt.handlers import Handlers
from tests.fleet_fakes import FakeStream, FakeWorker
from tests.fuzz.common import FUZZ, backstop_s, counted, short, within
from tests.fuzz.strategies import (
    Mutated,
    dumps,
    near_valid,
    payload_bytes,
    valid_documents,
)

pytestmark = pytest.mark.timeout(backstop_s())

P = "mobieye"
BROKER = "mqtt://127.0.0.1:9"  # never connected: the links here are built, not started
IDS = ["w1", "w2", "s1", "s2"]  # few ids, so that messages in a sequence meet
MODELS: dict[str, type[BaseModel]] = {
    "worker_state": WorkerState,
    "worker_set": Command,
    "stream_stats": StreamStats,
    "stream_state": StreamState,
    "stream_set": Command,
    "events": ObjectEvent,
}
_ID_FIELD = {"worker_state": "id", "stream_stats": "stream", "stream_state": "stream"}


def _topic(kind: str, ident: str) -> str:
    if kind == "events":
        return topics.events(P)
    builder = getattr(topics, kind)
    topic: str = builder(P, ident)
    return topic


mqtt_topics = st.one_of(
    st.builds(_topic, st.sampled_from(list(MODELS)), st.sampled_from(IDS)),
    # Foreign and malformed topics: any valid MQTT topic name may arrive under a wildcard.
    st.builds(
        lambda levels: "/".join(levels),
        st.lists(
            st.sampled_from(
                [
                    P,
                    "workers",
                    "streams",
                    "state",
                    "stats",
                    "set",
                    "events",
                    "",
                    "x",
                    "w1",
                    "s1",
                    " ",
                    "..",
                    "é",
                ]
            ),
            min_size=1,
            max_size=6,
        ),
    ),
    st.text(min_size=1, max_size=40),
).filter(lambda t: t != "" and "+" not in t and "#" not in t)  # what aiomqtt.Topic takes


@st.composite
def messages(draw: st.DrawFn) -> tuple[str, bytes]:
    """One (topic, payload): mostly a payload made for the topic's kind, ids often agreeing."""
    topic = draw(mqtt_topics)
    parsed = topics.parse(topic, P)
    kind = parsed.kind if parsed is not None else draw(st.sampled_from(list(MODELS)))
    model = MODELS[kind]
    choice = draw(st.sampled_from(["valid", "valid", "near", "garbage", "empty"]))
    if choice == "empty":
        return topic, b""  # a cleared retained message
    if choice == "garbage":
        return topic, draw(payload_bytes(model))
    doc = draw(valid_documents(model)) if choice == "valid" else draw(near_valid(model)).doc
    if isinstance(doc, dict) and kind in _ID_FIELD and parsed is not None and draw(st.booleans()):
        doc = {**doc, _ID_FIELD[kind]: parsed.id}
    return topic, dumps(doc).encode()


@FUZZ
@given(kind=st.sampled_from(list(MODELS)), data=st.data())
@counted
def test_parse_payload_returns_the_model_or_a_payload_error(kind: str, data: st.DataObject) -> None:
    model = MODELS[kind]
    topic = _topic(kind, "s1")
    mutated: Mutated | None = None
    if data.draw(st.booleans()):
        mutated = data.draw(near_valid(model))
        raw = dumps(mutated.doc).encode()
        if not _accepted(model, mutated.original):
            mutated = None  # the schema allowed it, a validator didn't: no one place to blame
    else:
        raw = data.draw(payload_bytes(model))
    with within(f"parse_payload({model.__name__}, {short(raw)})"):
        try:
            parse_payload(model, raw, topic)
        except PayloadError as exc:
            text = str(exc)
            assert text.startswith(f"bad {model.__name__} payload on {topic}: "), text
            assert exc.problems and all(exc.problems), f"no problems listed: {text}"
            if mutated is not None:
                assert mutated.blames(text), (
                    f"{mutated.how} at {mutated.path}: {text!r} does not say where"
                )


def _accepted(model: type[BaseModel], doc: Any) -> bool:
    try:
        model.model_validate_json(dumps(doc))
    except ValidationError:
        return False
    return True


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _read_everything(store: FleetStore) -> None:
    # What the API routes call; a view that fails validation here is a 500 there.
    store.prune()
    store.workers()
    store.streams()
    store.events()
    store.events(limit=3, stream="s1")
    for ident in IDS:
        store.worker(ident)
        store.stream(ident)
        store.series(ident)
        store.timeline(ident)


@FUZZ
@given(
    sequence=st.lists(st.tuples(messages(), st.floats(0, 700)), min_size=1, max_size=25),
)
@counted
def test_the_dashboard_store_takes_any_sequence_and_still_reads(
    sequence: list[tuple[tuple[str, bytes], float]],
) -> None:
    clock = Clock()
    store = FleetStore(P, stale_after_s=5, forget_after_s=600, max_events=5, max_points=5,
                       max_timeline=5, clock=clock)  # fmt: skip
    with within(f"FleetStore on {short(sequence)}"):
        for (topic, payload), dt in sequence:
            clock.now += dt
            assert store.on_message(topic, payload) in (True, False)
            _read_everything(store)
    c = store.counters
    assert c.messages == len(sequence)
    assert c.malformed + c.ignored <= c.messages
    if c.malformed:
        assert c.last_malformed, "a malformed message left no reason"


# -- every subscriber behind one Handlers, as the processes wire them ----------------------------


class Bugs(logging.Handler):
    """Handlers logs a handler's unexpected exception at ERROR with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@functools.cache
def _settings() -> Settings:
    return load_settings(None, {"mqtt": {"broker": BROKER}})


def _subscribers() -> tuple[Handlers, FleetStore, WorkerDirectory, FakeWorker]:
    handlers = Handlers("fuzz")
    store = FleetStore(P)

    def feed(topic: str, payload: bytes) -> None:  # as mobieye/dashboard/app.py wires it
        store.on_message(topic, payload)

    for topic_filter in (
        topics.all_worker_states(P),
        topics.all_stream_stats(P),
        topics.all_stream_states(P),
        topics.events(P),
    ):
        handlers.add(topic_filter, feed)
    directory = WorkerDirectory(MqttConfig(broker=BROKER, prefix=P), "fuzz-edge")
    handlers.add(topics.all_worker_states(P), directory._on_state)
    worker = FakeWorker("w1", {s: FakeStream(s) for s in ("s1", "s2")})
    presence = FleetPresence(_settings(), worker)
    handlers.add(topics.worker_set(P, worker.worker_id), presence._on_command)
    handlers.add(topics.all_stream_sets(P), presence._on_command)
    return handlers, store, directory, worker


@FUZZ
@given(sequence=st.lists(messages(), min_size=1, max_size=20))
@counted
def test_no_subscriber_lets_an_unexpected_exception_out(sequence: list[tuple[str, bytes]]) -> None:
    handlers, store, directory, worker = _subscribers()
    bugs = Bugs()
    log = logging.getLogger("mobieye.mqtt")
    log.addHandler(bugs)
    try:
        with within(f"Handlers.dispatch on {short(sequence)}"):
            asyncio.run(_dispatch_all(handlers, sequence))
            directory.candidates()
            directory.candidates(exclude={"w1"})
            _read_everything(store)
    finally:
        log.removeHandler(bugs)
    assert not bugs.records, "\n".join(
        f"{r.getMessage()}: {r.exc_info[1]!r}" if r.exc_info else r.getMessage()
        for r in bugs.records
    )
    for stream in worker.streams.values():
        for command in stream.applied:
            assert isinstance(command, Command)  # only parsed commands reach a stream


async def _dispatch_all(handlers: Handlers, sequence: list[tuple[str, bytes]]) -> None:
    for topic, payload in sequence:
        await handlers.dispatch(aiomqtt.Topic(topic), payload)


# -- a command's way from MQTT to the stream's data channel ----------------------------------


def _as_controls(command: Command) -> None:
    # cloud_worker/session.py StreamSession.apply_command turns a command into these Controls.
    if command.model is not None or command.keyframe_interval is not None:
        Control(model=command.model, keyframe_interval=command.keyframe_interval, reason="MQTT")
    if command.sla_ms is not None:
        Control(sla_ms=command.sla_ms, reason="MQTT")


LONG_MODEL = 256  # Control.model's max_length; Command.model has none (the xfail below)


@FUZZ
@given(raw=payload_bytes(Command))
@counted
def test_every_accepted_command_becomes_a_valid_control(raw: bytes) -> None:
    try:
        command = parse_payload(Command, raw, topics.stream_set(P, "s1"))
    except PayloadError:
        return
    if command.model is not None and len(command.model) > LONG_MODEL:
        return  # test_a_long_model_name_in_a_command_is_refused_up_front
    try:
        _as_controls(command)
    except ValidationError as exc:
        raise AssertionError(f"accepted {short(raw)} but its Control is invalid: {exc}") from None


def test_a_long_model_name_in_a_command_is_refused_up_front() -> None:
    raw = dumps({"model": "m" * (LONG_MODEL + 1)}).encode()
    try:
        command = parse_payload(Command, raw, topics.stream_set(P, "s1"))
    except PayloadError:
        return  # refused with a reason: what should happen
    _as_controls(command)
