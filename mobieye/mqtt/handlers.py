"""Who gets which received MQTT message: topic filters and their handlers.

Handlers run one message at a time, in order; a :class:`~mobieye.errors.MobiEyeError` (an
expected refusal, such as a malformed payload) is logged as a warning, anything else with its
traceback, and the message is ignored either way: a bad message never stops the link.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable

import aiomqtt

from mobieye.errors import MobiEyeError

log = logging.getLogger("mobieye.mqtt")

Handler = Callable[[str, bytes], Awaitable[None] | None]


def check_filter(topic_filter: str) -> None:
    # paho raises on a bad filter in the background task, which would fail every session.
    levels = topic_filter.split("/")
    wild_ok = all(lvl in ("+", "#") or ("+" not in lvl and "#" not in lvl) for lvl in levels)
    if not topic_filter or "\0" in topic_filter or not wild_ok or "#" in levels[:-1]:
        raise ValueError(f"invalid MQTT topic filter {topic_filter!r}")


class Handlers:
    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        self._items: list[tuple[str, Handler]] = []
        self.dropped = 0  # received messages dropped, oldest first, as handlers fell behind

    def note_dropped(self) -> None:
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 1000 == 0:
            log.warning("MQTT link %s: handlers fall behind; dropped %d received message(s), "
                        "oldest first", self.client_id, self.dropped)  # fmt: skip

    def add(self, topic_filter: str, handler: Handler) -> None:
        check_filter(topic_filter)
        self._items.append((topic_filter, handler))

    @property
    def filters(self) -> set[str]:
        return {f for f, _ in self._items}

    async def dispatch(self, topic: aiomqtt.Topic, raw: bytes) -> None:
        for topic_filter, handler in list(self._items):
            if not topic.matches(topic_filter):
                continue
            try:
                result = handler(topic.value, raw)
                if inspect.isawaitable(result):
                    await result
            except MobiEyeError as exc:
                log.warning("MQTT message on %s ignored: %s", topic.value, exc)
            except Exception:
                log.exception(
                    "MQTT handler for %s failed on %s; message ignored", topic_filter, topic.value
                )
