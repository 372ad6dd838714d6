"""A bounded hand-off between pipeline stages that keeps the newest items.

Live video must never queue up: when the consumer falls behind, the oldest waiting item is
dropped (and counted), so the consumer always gets the freshest frame.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class SlotClosed(Exception):
    """The producer closed the slot and nothing is left in it."""


class LatestSlot(Generic[T]):
    """asyncio queue of at most ``size`` items with a drop-oldest policy. Use from one loop."""

    def __init__(self, size: int = 1) -> None:
        if size < 1:
            raise ValueError("size must be >= 1")
        self._items: deque[T] = deque(maxlen=size)
        self._event = asyncio.Event()
        self._closed = False
        self.dropped = 0
        self.put_count = 0

    def put(self, item: T) -> None:
        if self._closed:
            return
        if len(self._items) == self._items.maxlen:
            self.dropped += 1
        self._items.append(item)
        self.put_count += 1
        self._event.set()

    def close(self) -> None:
        self._closed = True
        self._event.set()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._items)

    async def get(self) -> T:
        while not self._items:
            if self._closed:
                raise SlotClosed
            self._event.clear()
            await self._event.wait()
        return self._items.popleft()
