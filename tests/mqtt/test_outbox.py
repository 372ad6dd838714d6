"""The MQTT outbox's policy on its own: what is kept, what is dropped, what goes out first."""

from __future__ import annotations

from mobieye.mqtt.outbox import Outbox, Outgoing


def live(n: int) -> Outgoing:
    return Outgoing(f"p/streams/s{n}/stats", str(n).encode(), 0, False)


def state(topic: str, payload: bytes) -> Outgoing:
    return Outgoing(topic, payload, 1, True)


def drain(box: Outbox) -> list[Outgoing]:
    out = []
    while (msg := box.next()) is not None:
        box.sent(msg)
        out.append(msg)
    return out


def test_a_full_fifo_drops_the_oldest_live_message() -> None:
    box = Outbox(max_queued=3)
    assert all(box.put(live(i)) for i in range(3))
    assert not box.put(live(3))
    assert box.dropped == 1
    assert [m.payload for m in drain(box)] == [b"1", b"2", b"3"]


def test_states_coalesce_per_topic_and_go_first() -> None:
    box = Outbox(max_queued=2)
    box.put(live(0))
    box.put(state("p/workers/w1/state", b"loading"))
    box.put(state("p/workers/w1/state", b"online"))
    box.put(live(1))
    box.put(live(2))  # the FIFO overflows; the state is not in it
    sent = drain(box)
    assert [m.payload for m in sent] == [b"online", b"1", b"2"]


def test_states_are_sent_again_after_a_reconnect_and_cleared_ones_forgotten() -> None:
    box = Outbox()
    box.put(state("p/workers/w1/state", b"online"))
    box.put(state("p/streams/s1/state", b"live"))
    drain(box)
    box.put(state("p/streams/s1/state", b""))  # the stream ended: clear its retained state
    assert [m.payload for m in drain(box)] == [b""]
    box.reconnected()
    assert [(m.topic, m.payload) for m in drain(box)] == [("p/workers/w1/state", b"online")]


def test_a_failed_send_goes_back_to_the_front() -> None:
    box = Outbox()
    box.put(live(0))
    box.put(live(1))
    first = box.next()
    assert first is not None
    box.failed(first)
    assert [m.payload for m in drain(box)] == [b"0", b"1"]
    box.put(state("t", b"a"))
    msg = box.next()
    assert msg is not None
    box.put(state("t", b"b"))  # superseded while in flight
    box.failed(msg)
    assert [m.payload for m in drain(box)] == [b"b"]


def test_too_many_state_topics_forget_the_oldest() -> None:
    box = Outbox(max_retained=2)
    box.put(state("a", b"1"))
    box.put(state("b", b"1"))
    assert not box.put(state("c", b"1"))
    assert box.forgotten == 1
    assert sorted(m.topic for m in drain(box)) == ["b", "c"]
