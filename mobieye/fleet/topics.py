"""Pure builders and parsers for MobiEye's MQTT topics, all under a configurable prefix ``P``.

- ``P/workers/<id>/state``  retained worker state; the worker's last will sets it offline
- ``P/workers/<id>/set``    commands to a worker (state mirrored on ``.../state``)
- ``P/streams/<id>/stats``  periodic stream statistics (not retained)
- ``P/streams/<id>/state``  retained stream state (mirrors commands)
- ``P/streams/<id>/set``    commands to a stream
- ``P/events``              per tracked object: ``new``, ``update``, ``end``
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from mobieye.fleet.errors import TopicError
from mobieye.ids import MAX_ID_LENGTH, is_valid_id

Kind = Literal["worker_state", "worker_set", "stream_stats", "stream_state", "stream_set", "events"]

# (collection, leaf) -> kind; the id sits between them.
_KINDS: dict[tuple[str, str], Kind] = {
    ("workers", "state"): "worker_state",
    ("workers", "set"): "worker_set",
    ("streams", "stats"): "stream_stats",
    ("streams", "state"): "stream_state",
    ("streams", "set"): "stream_set",
}


class Parsed(NamedTuple):
    kind: Kind
    id: str | None  # None for events, which belong to no single worker or stream


def check_id(value: str, what: str = "id") -> str:
    """Return ``value`` if it can be one topic level; raise TopicError otherwise."""
    if not isinstance(value, str) or not is_valid_id(value):
        raise TopicError(
            f"invalid {what} {value!r}: use 1-{MAX_ID_LENGTH} of the characters A-Z a-z 0-9 _ . : -"
        )
    return value


def _prefix(prefix: str) -> str:
    # A trailing slash would make an empty level; wildcards and NUL would break every topic.
    p = prefix.rstrip("/")
    if not p or any(c in p for c in "+#\0"):
        raise TopicError(f"invalid MQTT prefix {prefix!r}: must be non-empty without + # or NUL")
    return p


def worker_state(prefix: str, worker_id: str) -> str:
    return f"{_prefix(prefix)}/workers/{check_id(worker_id, 'worker id')}/state"


def worker_set(prefix: str, worker_id: str) -> str:
    return f"{_prefix(prefix)}/workers/{check_id(worker_id, 'worker id')}/set"


def stream_stats(prefix: str, stream_id: str) -> str:
    return f"{_prefix(prefix)}/streams/{check_id(stream_id, 'stream id')}/stats"


def stream_state(prefix: str, stream_id: str) -> str:
    return f"{_prefix(prefix)}/streams/{check_id(stream_id, 'stream id')}/state"


def stream_set(prefix: str, stream_id: str) -> str:
    return f"{_prefix(prefix)}/streams/{check_id(stream_id, 'stream id')}/set"


def events(prefix: str) -> str:
    return f"{_prefix(prefix)}/events"


# Wildcard filters for subscribers (a dashboard, the fleet's scheduler).


def all_worker_states(prefix: str) -> str:
    return f"{_prefix(prefix)}/workers/+/state"


def all_worker_sets(prefix: str) -> str:
    return f"{_prefix(prefix)}/workers/+/set"


def all_stream_stats(prefix: str) -> str:
    return f"{_prefix(prefix)}/streams/+/stats"


def all_stream_states(prefix: str) -> str:
    return f"{_prefix(prefix)}/streams/+/state"


def all_stream_sets(prefix: str) -> str:
    return f"{_prefix(prefix)}/streams/+/set"


def everything(prefix: str) -> str:
    return f"{_prefix(prefix)}/#"


def parse(topic: str, prefix: str | None = None) -> Parsed | None:
    """Say what a topic is, or None if it is none of ours.

    With ``prefix`` the topic must start with it; without, the tail alone decides (so a
    dashboard can read any prefix).
    """
    if prefix is not None:
        head = _prefix(prefix) + "/"
        if not topic.startswith(head):
            return None
        levels = topic[len(head) :].split("/")
        if levels == ["events"]:
            return Parsed("events", None)
        if len(levels) != 3:
            return None
    else:
        levels = topic.split("/")
        if len(levels) >= 2 and levels[-1] == "events":
            return Parsed("events", None)
        if len(levels) < 4:
            return None
        levels = levels[-3:]
    collection, ident, leaf = levels
    kind = _KINDS.get((collection, leaf))
    if kind is None or not is_valid_id(ident):
        return None
    return Parsed(kind, ident)
