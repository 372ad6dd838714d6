"""The receive path's bounded queues: what an overflow drops, and that the sender is asked for
a keyframe when nothing decodable is left (a real receiver gets the queue and its event)."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pytest
from aiortc import RTCPeerConnection
from aiortc.rtcrtpreceiver import RemoteStreamTrack, RTCRtpReceiver

from mobieye.webrtc.bounded import (
    REASK_EVERY,
    KeyframeQueue,
    install_bounded_receive_queues,
    receive_queues_of,
    uninstall_bounded_receive_queues,
)

# Depayloaded VP8: frame tag bit 0 clear and the start code at 3..5 is a key frame.
KEY = b"\x10\x02\x00\x9d\x01\x2a\x80\x02\xe0\x01"
DELTA = b"\x11\x02\x00" + b"\x00" * 7


@dataclass
class Frame:  # aiortc's JitterFrame: what the queue looks at
    data: bytes
    timestamp: int


def item(n: int, key: bool = False) -> tuple[str, Frame]:
    return ("vp8", Frame(KEY if key else DELTA, n))


def queued(q: KeyframeQueue) -> list[int]:
    return [f.timestamp for _, f in q.queue]


def test_an_overflow_drops_through_to_the_next_queued_keyframe() -> None:
    q = KeyframeQueue(4)
    for n, key in ((0, True), (1, False), (2, True), (3, False)):
        q.put(item(n, key))
    q.put(item(4))
    # 0 dropped, and 1 (it needs 0): the decoder starts again at keyframe 2, cleanly.
    assert queued(q) == [2, 3, 4] and q.dropped == 2
    assert not q.keyframe_needed.is_set() and not q.waiting


def test_with_no_keyframe_left_it_asks_for_one_and_drops_until_it_comes() -> None:
    asked = threading.Event()
    q = KeyframeQueue(3, asked)
    for n in range(3):
        q.put(item(n))
    q.put(item(3))  # full, no keyframe queued: everything is undecodable
    assert queued(q) == [] and q.dropped == 4 and q.waiting and asked.is_set()
    asked.clear()
    for n in range(4, 4 + REASK_EVERY - 1):
        q.put(item(n))
    assert queued(q) == [] and not asked.is_set()
    q.put(item(100))  # still no keyframe after REASK_EVERY frames: ask again (a PLI was lost)
    assert asked.is_set()
    q.put(item(101, key=True))
    q.put(item(102))
    assert queued(q) == [101, 102] and not q.waiting
    q.put(None)  # end of stream: always queued
    assert q.queue[-1] is None and q.get() == item(101, key=True)


def test_the_end_of_stream_sentinel_is_queued_even_when_full() -> None:
    q = KeyframeQueue(1)
    q.put(item(0, key=True))
    q.put(None)
    assert list(q.queue) == [item(0, key=True), None]


@pytest.mark.asyncio
async def test_a_real_receiver_gets_the_queue_and_its_decode_error_event() -> None:
    install_bounded_receive_queues(encoded=5, decoded=2)
    pc = RTCPeerConnection()
    try:
        transceiver = pc.addTransceiver("video", direction="recvonly")
        receiver: RTCRtpReceiver = transceiver.receiver
        encoded, decoded = receive_queues_of(receiver)
        assert isinstance(encoded, KeyframeQueue) and encoded.maxsize == 5
        assert encoded.keyframe_needed is receiver._RTCRtpReceiver__decoder_error  # type: ignore[attr-defined]
        assert decoded is None  # the track comes with the remote description...
        assert RemoteStreamTrack(kind="video")._queue.maxsize == 2  # ...bounded too
    finally:
        uninstall_bounded_receive_queues()
        await pc.close()
