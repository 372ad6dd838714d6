"""Bounded queues between aiortc's receiver, its decoder thread and the track a session reads.

aiortc queues encoded frames for the decoder thread and decoded frames for the track without
bound: a peer that sends faster than the worker decodes, or a session that reads slower than
frames decode, grows both until memory runs out. Both are bounded, and drop the oldest:

* Encoded frames (:class:`KeyframeQueue`): a frame after a dropped one decodes against missing
  references, and VP8 decoders often "succeed" with a corrupt picture, which would be detected
  on until the sender's next keyframe. So an overflow drops through to the next queued
  keyframe; with none queued, it drops everything, asks the sender for a keyframe (aiortc's
  decode-error event, which it answers with a PLI) and drops what arrives until one comes.
* Decoded frames: the oldest goes (the session keeps only the newest anyway).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from typing import Any

from aiortc.rtcrtpreceiver import RemoteStreamTrack, RTCRtpReceiver

from .keyframes import is_keyframe

logger = logging.getLogger(__name__)

ENCODED_FRAMES = 300  # ~10 s at 30 fps (a few MB): a CPU-starved worker never drops one
DECODED_FRAMES = 2  # the session keeps only the newest anyway (its latest-frame slot)
REASK_EVERY = 30  # frames dropped while waiting for a keyframe before asking again (~1 s)

_STOCK_RECEIVER_INIT = RTCRtpReceiver.__init__
_STOCK_TRACK_INIT = RemoteStreamTrack.__init__


def _is_keyframe_item(item: Any) -> bool:
    """A decoder-queue item, ``(codec, JitterFrame)``, holding a keyframe."""
    try:
        return is_keyframe(item[1].data)
    except (AttributeError, IndexError, TypeError):
        return False


class KeyframeQueue(queue.Queue[Any]):
    """The decoder thread's input: ``put`` never blocks; when full, frames are dropped to the
    next keyframe (see the module's docstring). ``keyframe_needed`` is set to ask the sender."""

    def __init__(self, maxsize: int, keyframe_needed: threading.Event | None = None) -> None:
        super().__init__(maxsize)
        self.keyframe_needed = keyframe_needed or threading.Event()
        self.dropped = 0
        self.waiting = False  # for a keyframe: delta frames are dropped on arrival
        self._since_ask = 0

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        with self.mutex:
            if item is not None:  # the end-of-stream sentinel is never dropped nor blocks
                if self.waiting and not _is_keyframe_item(item):
                    self.dropped += 1
                    self._since_ask += 1
                    if self._since_ask >= REASK_EVERY:  # a PLI can be lost, or ignored
                        self._ask()
                    return
                self.waiting = False
                if self.maxsize > 0 and self._qsize() >= self.maxsize:
                    self._drop_to_keyframe(item)
                    if self.waiting:
                        return
            self._put(item)
            self.unfinished_tasks += 1
            self.not_empty.notify()

    def _drop_to_keyframe(self, item: Any) -> None:
        self._drop_head()
        while self.queue and not _is_keyframe_item(self.queue[0]):
            self._drop_head()
        if not self.queue and not _is_keyframe_item(item):
            self.dropped += 1  # the arriving frame too: nothing it refers to is left
            self.waiting = True
            self._ask()

    def _drop_head(self) -> None:
        self.queue.popleft()
        self.dropped += 1
        self.unfinished_tasks -= 1  # a dropped item is done: join() must not wait on it

    def _ask(self) -> None:
        self._since_ask = 0
        self.keyframe_needed.set()


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
        # Its __decoder_error event makes the receiver send a PLI with its next packet.
        ask = getattr(self, "_RTCRtpReceiver__decoder_error", None)
        self._RTCRtpReceiver__decoder_queue = KeyframeQueue(encoded, ask)  # type: ignore[attr-defined]

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
