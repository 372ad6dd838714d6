"""What an MQTT link still has to send, and what it drops (pure: no sockets, no event loop).

- Non-retained messages (stats, events) sit in a FIFO of ``max_queued``; when it is full the
  OLDEST is dropped and counted. They are live data: a fresh one is worth more than an old one.
- Retained messages (states) are coalesced per topic: only the newest payload of each topic is
  kept, so they never overflow the FIFO and the latest state is never lost. The outbox
  remembers the last retained payload of each topic (at most ``max_retained`` topics, the
  oldest forgotten first) so that :meth:`Outbox.reconnected` can send them all again: a
  restarted broker (or one that fired our last will meanwhile) no longer holds them. An empty
  retained payload clears the topic and is forgotten once sent.
- Retained states go out before the FIFO.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from pydantic import BaseModel

PayloadLike = bytes | bytearray | str | BaseModel


def check_topic(topic: str) -> None:
    """Refused in the caller, rather than failing the link's background task over and over."""
    if not topic or any(c in topic for c in "+#\0"):
        raise ValueError(f"cannot publish to MQTT topic {topic!r}")


@dataclass(slots=True, eq=False)
class Outgoing:
    topic: str
    payload: bytes
    qos: int
    retain: bool

    @classmethod
    def make(cls, topic: str, payload: PayloadLike, qos: int = 0, retain: bool = False) -> Outgoing:
        check_topic(topic)
        if qos not in (0, 1, 2):
            raise ValueError(f"MQTT QoS must be 0, 1 or 2, got {qos}")
        if isinstance(payload, BaseModel):
            data = payload.model_dump_json().encode()
        elif isinstance(payload, str):
            data = payload.encode()
        else:
            data = bytes(payload)
        return cls(topic, data, qos, retain)


class Outbox:
    def __init__(self, max_queued: int = 1000, max_retained: int = 10_000) -> None:
        self._queue: deque[Outgoing] = deque(maxlen=max_queued)
        self._retained: dict[str, Outgoing] = {}  # newest retained message per topic
        self._dirty: dict[str, None] = {}  # retained topics still to send (an ordered set)
        self.max_queued = max_queued
        self.max_retained = max_retained
        self.dropped = 0  # non-retained messages dropped because the FIFO was full
        self.forgotten = 0  # retained topics forgotten past max_retained

    def __len__(self) -> int:
        return len(self._queue) + len(self._dirty)

    def put(self, msg: Outgoing) -> bool:
        """Queue a message; False when that cost something (an old message or topic)."""
        if msg.retain:
            self._retained.pop(msg.topic, None)  # re-insert: newest topics evict last
            self._retained[msg.topic] = msg
            self._dirty[msg.topic] = None
            if len(self._retained) <= self.max_retained:
                return True
            oldest = next(iter(self._retained))
            del self._retained[oldest]
            self._dirty.pop(oldest, None)
            self.forgotten += 1
            return False
        full = len(self._queue) == self.max_queued
        self.dropped += full  # deque(maxlen) drops the oldest on append
        self._queue.append(msg)
        return not full

    def next(self) -> Outgoing | None:
        """The message to send now (retained states first), or None when all is sent. Call
        :meth:`sent` or :meth:`failed` with it afterwards."""
        if self._dirty:
            topic = next(iter(self._dirty))
            del self._dirty[topic]
            return self._retained[topic]
        if self._queue:
            return self._queue.popleft()
        return None

    def sent(self, msg: Outgoing) -> None:
        if msg.retain and not msg.payload and self._retained.get(msg.topic) is msg:
            del self._retained[msg.topic]  # a cleared topic need not be re-published

    def failed(self, msg: Outgoing) -> None:
        """It could not be sent: it goes back to the front (unless it has been superseded)."""
        if msg.retain:
            if msg.topic in self._retained:
                self._dirty.setdefault(msg.topic, None)
        elif len(self._queue) < self.max_queued:
            self._queue.appendleft(msg)

    def reconnected(self) -> None:
        """A new session: every remembered state goes out again."""
        self._dirty = dict.fromkeys(self._retained)
