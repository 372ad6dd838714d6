"""Bounded queues between aiortc's receiver, its decoder thread and the track a session reads.

aiortc queues encoded frames for the decoder thread and decoded frames for the track without
bound: a peer that sends faster than the worker decodes, or a session that reads slower than
frames decode, grows both until memory runs out. Both become drop-oldest queues: the newest
frame is what a real-time pipeline wants, a dropped encoded frame makes the next ones fail to
decode, and that decode error is what makes aiortc ask the sender for a keyframe.
"""

from __future__ import annotations

import asyncio
import logging
import queue
from typing import Any

from aiortc.rtcrtpreceiver import RemoteStreamTrack, RTCRtpReceiver

logger = logging.getLogger(__name__)

ENCODED_FRAMES = 300  # ~10 s at 30 fps (a few MB): a CPU-starved worker never drops one
DECODED_FRAMES = 2  # the session keeps only the newest anyway (its latest-frame slot)

_STOCK_RECEIVER_INIT = RTCRtpReceiver.__init__
_STOCK_TRACK_INIT = RemoteStreamTrack.__init__


class DropOldestQueue(queue.Queue[Any]):
    """The decoder thread's input: ``put`` never blocks; when full the oldest item goes."""

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize)
        self.dropped = 0

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        with self.mutex:
            if item is not None:  # the end-of-stream sentinel is never dropped nor blocks
                while self.maxsize > 0 and self._qsize() >= self.maxsize:
                    self.queue.popleft()
                    self.dropped += 1
            self._put(item)
            self.unfinished_tasks += 1
            self.not_empty.notify()


class DropOldestAsyncQueue(asyncio.Queue[Any]):
    """The track's queue of decoded frames: a put never waits; when full the oldest goes."""

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize)
        self.dropped = 0

    def put_nowait(self, item: Any) -> None:
        while self.full():
            self.get_nowait()
            self.dropped += 1
        super().put_nowait(item)

    async def put(self, item: Any) -> None:
        self.put_nowait(item)


def install_bounded_receive_queues(
    encoded: int = ENCODED_FRAMES, decoded: int = DECODED_FRAMES
) -> None:
    """Make receivers and remote tracks created from now on use bounded queues. Idempotent."""
    if encoded < 1 or decoded < 1:
        raise ValueError(f"queue sizes must be at least 1, got {encoded} and {decoded}")

    def receiver_init(self: RTCRtpReceiver, *args: Any, **kwargs: Any) -> None:
        _STOCK_RECEIVER_INIT(self, *args, **kwargs)
        # RTCRtpReceiver.__decoder_queue, name-mangled; the decoder thread gets it at start.
        self._RTCRtpReceiver__decoder_queue = DropOldestQueue(encoded)  # type: ignore[attr-defined]

    def track_init(self: RemoteStreamTrack, *args: Any, **kwargs: Any) -> None:
        _STOCK_TRACK_INIT(self, *args, **kwargs)
        self._queue = DropOldestAsyncQueue(decoded)

    RTCRtpReceiver.__init__ = receiver_init  # type: ignore[method-assign]
    RemoteStreamTrack.__init__ = track_init  # type: ignore[method-assign]
    logger.info("bounded receive queues: %d encoded, %d decoded frames", encoded, decoded)


def uninstall_bounded_receive_queues() -> None:
    RTCRtpReceiver.__init__ = _STOCK_RECEIVER_INIT  # type: ignore[method-assign]
    RemoteStreamTrack.__init__ = _STOCK_TRACK_INIT  # type: ignore[method-assign]


def receive_queues_of(receiver: RTCRtpReceiver) -> tuple[Any, Any]:
    """(encoded, decoded) queues of a receiver, for tests and counters."""
    encoded = getattr(receiver, "_RTCRtpReceiver__decoder_queue", None)
    track = getattr(receiver, "_track", None)
    return encoded, getattr(track, "_queue", None)
