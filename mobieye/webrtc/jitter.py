"""Low-latency video jitter buffer for aiortc's RTCRtpReceiver.

aiortc's video JitterBuffer releases a frame only when the first packet of the *next* frame
arrives (a whole frame interval of added latency), and holds up to 512 packets behind a lost
packet that is never retransmitted. This buffer releases a frame on its marker packet once all of
its packets are present, keeps 64 packets, gives up on a hole after ``max_wait_ms``, and tracks
which emitted frames depend on dropped data (until the next keyframe).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

import aiortc.rtcrtpreceiver
from aiortc.jitterbuffer import MAX_MISORDER, JitterBuffer, JitterFrame
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_add, uint16_gt

from .keyframes import is_keyframe, vp8_keyframe_size

logger = logging.getLogger(__name__)

DEFAULT_CAPACITY = 64
DEFAULT_MAX_WAIT_MS = 100.0
# Growth limit for frames that do not fit although nothing is missing (large keyframes).
DEFAULT_MAX_CAPACITY = 1024
# Re-ask for a keyframe at this interval while frames are still damaged (a PLI can be lost).
PLI_RETRY_S = 0.5

_STOCK_JITTER_BUFFER = JitterBuffer
# The slot before the very first packet: treated as a frame end, as aiortc does implicitly.
_STREAM_START = (True, -1)


class LowLatencyJitterBuffer(JitterBuffer):
    """Video jitter buffer releasing each frame as soon as it is complete.

    A frame is the run of packets with one RTP timestamp and contiguous sequence numbers that
    starts at a known frame boundary (the packet before it had the marker bit, or a different
    timestamp). It is complete when its marker packet is present, or, for senders that omit the
    marker, when the next frame's first packet follows it contiguously. The very first packet
    received is assumed to start a frame, as aiortc assumes. Only whole frames are emitted, each
    at most once, in sequence order. The buffer holds ``capacity`` packets and grows, up to
    ``max_capacity``, only for a frame that does not fit although none of its packets is missing.
    """

    def __init__(
        self,
        capacity: int = DEFAULT_CAPACITY,
        *,
        max_wait_ms: float = DEFAULT_MAX_WAIT_MS,
        clock: Callable[[], float] = time.monotonic,
        max_capacity: int = DEFAULT_MAX_CAPACITY,
        damaged_history: int = 1024,
        max_pixels: int | None = None,
    ) -> None:
        super().__init__(capacity=capacity, is_video=True)
        # A VP8 key frame declaring more pixels than this is dropped before it is decoded (a
        # flat 8K key frame is a few KB on the wire, and ~50 MB once decoded).
        self.max_pixels = max_pixels
        self.oversized = 0
        self._max_capacity = max(capacity, max_capacity)
        self._max_wait_s = max_wait_ms / 1000.0
        self._clock = clock
        # (marker, timestamp) of the packet just before the head slot; None when it was lost, in
        # which case the head cannot be trusted to start a frame.
        self._prev: tuple[bool, int] | None = _STREAM_START
        self._newest: int | None = None
        self._holes: dict[int, float] = {}  # missing sequence number -> when a later one arrived
        self._last_timestamp: int | None = None
        self._last_pli = float("-inf")
        self._damaged_history = damaged_history
        self._damaged_timestamps: OrderedDict[int, None] = OrderedDict()
        # No keyframe seen yet: nothing emitted so far can be decoded on its own.
        self.damaged = True
        self.frames_on_marker = 0
        self.frames_on_next_frame = 0
        self.packets_dropped = 0
        # RTP payload bytes taken in (late and duplicate packets included): the stream's uplink
        # as the receiver sees it, counted like the sender's own bytesSent statistic.
        self.payload_bytes = 0

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        pli = False
        self.payload_bytes += len(packet.payload)
        now = self._clock()
        seq = packet.sequence_number
        if self._origin is None:
            self._origin = seq
        else:
            delta = uint16_add(seq, -self._origin)
            misorder = uint16_add(self._origin, -seq)
            if misorder < delta:
                if misorder < MAX_MISORDER:
                    return False, None  # late or duplicate: its frame was emitted or dropped
                # Far behind the head: the sender restarted its sequence numbers.
                self._drop(self._capacity + MAX_MISORDER)
                self._origin = seq
                self._newest = None
                pli = True
            elif delta >= self._capacity:
                if self._is_next_in_order(seq) and delta < self._max_capacity:
                    # Nothing is missing: a frame (typically a keyframe) is simply bigger than
                    # the buffer. Dropping it would lose every keyframe, and the PLI would fail too.
                    self._grow(delta + 1)
                else:
                    self._drop(delta - self._capacity + 1)
                    pli = True
        self._note_arrival(seq, now)
        self._packets[seq % self._capacity] = packet

        self._skip_to_frame_start()
        frame = self._pop_frame()
        while frame is None and self._head_stalled(now):
            self._drop(self._head_extent()[0] + 1)  # the head frame and its first hole
            pli = True
            self._skip_to_frame_start()
            frame = self._pop_frame()
        if frame is not None and self._oversized(frame):
            # Its delta frames then fail to decode: the sender's problem, not the worker's.
            return False, None
        if frame is not None and self._note_emitted(frame):
            pli = pli or now - self._last_pli >= PLI_RETRY_S
        if pli:
            self._last_pli = now
        return pli, frame

    def _oversized(self, frame: JitterFrame) -> bool:
        if self.max_pixels is None:
            return False
        size = vp8_keyframe_size(frame.data)
        if size is None or size[0] * size[1] <= self.max_pixels:
            return False
        self.oversized += 1
        logger.debug("dropped a %dx%d VP8 key frame before decoding it", *size)
        return True

    def is_damaged(self, timestamp: int) -> bool:
        """Whether the frame emitted with this RTP timestamp depends on dropped data.

        Compared modulo 2**32, so an unwrapped timestamp (a decoded frame's pts) works too.
        """
        return (timestamp & 0xFFFFFFFF) in self._damaged_timestamps

    def _is_next_in_order(self, seq: int) -> bool:
        return not self._holes and self._newest is not None and seq == uint16_add(self._newest, 1)

    def _grow(self, needed: int) -> None:
        assert self._origin is not None
        capacity = self._capacity
        while capacity < needed:
            capacity *= 2
        packets: list[RtpPacket | None] = [None] * capacity
        for packet in self._packets:
            if packet is not None:
                packets[packet.sequence_number % capacity] = packet
        self._packets, self._capacity = packets, capacity
        logger.info("jitter buffer grown to %d packets for a large frame", capacity)

    def _note_arrival(self, seq: int, now: float) -> None:
        if self._newest is None or uint16_gt(seq, self._newest):
            assert self._origin is not None
            gap = uint16_add(seq, -self._newest) if self._newest is not None else 0
            for i in range(1, min(gap, self._capacity)):
                missing = uint16_add(seq, -i)
                if uint16_add(missing, -self._origin) < self._capacity:
                    self._holes[missing] = now
            self._newest = seq
        else:
            self._holes.pop(seq, None)

    def _is_frame_start(self, packet: RtpPacket) -> bool:
        if self._prev is None or packet.timestamp == self._last_timestamp:
            return False
        marker, timestamp = self._prev
        return marker or timestamp != packet.timestamp

    def _skip_to_frame_start(self) -> None:
        # Packets at the head that cannot be shown to start a frame are the tail of a frame
        # whose beginning was dropped; emitting them would hand the decoder a partial frame.
        assert self._origin is not None
        while (head := self._packets[self._origin % self._capacity]) is not None:
            if self._is_frame_start(head):
                return
            # A stray packet of an already emitted frame (e.g. padding) costs nothing.
            self._drop(1, count_as_loss=head.timestamp != self._last_timestamp)

    def _head_extent(self) -> tuple[int, bool]:
        """(number of contiguous head-frame packets, whether the head frame is complete)."""
        assert self._origin is not None
        head = self._packets[self._origin % self._capacity]
        if head is None:
            return 0, False
        for count in range(self._capacity):
            packet = self._packets[(self._origin + count) % self._capacity]
            if packet is None:
                return count, False
            if packet.timestamp != head.timestamp:
                return count, True
            if packet.marker:
                return count + 1, True
        return self._capacity, False

    def _head_stalled(self, now: float) -> bool:
        assert self._origin is not None
        count, complete = self._head_extent()
        hole_since = self._holes.get(uint16_add(self._origin, count))
        return not complete and hole_since is not None and now - hole_since > self._max_wait_s

    def _pop_frame(self) -> JitterFrame | None:
        assert self._origin is not None
        count, complete = self._head_extent()
        if not complete:
            return None
        packets = [self._packets[(self._origin + i) % self._capacity] for i in range(count)]
        data = b"".join(p._data for p in packets if p is not None)  # type: ignore[attr-defined]
        last = packets[-1]
        assert last is not None
        if last.marker:
            self.frames_on_marker += 1
        else:
            self.frames_on_next_frame += 1
        self._drop(count, count_as_loss=False)
        return JitterFrame(data=data, timestamp=last.timestamp)

    def _drop(self, count: int, count_as_loss: bool = True) -> None:
        """Advance the head by ``count`` slots, remembering what preceded the new head."""
        assert self._origin is not None
        if count_as_loss:
            self.damaged = True
        for _ in range(min(count, self._capacity)):
            pos = self._origin % self._capacity
            packet = self._packets[pos]
            self._packets[pos] = None
            self._holes.pop(self._origin, None)
            if packet is None:
                self._prev = None
            else:
                self._prev = (bool(packet.marker), packet.timestamp)
                if count_as_loss:
                    self.packets_dropped += 1
            self._origin = uint16_add(self._origin, 1)
        if count > self._capacity:
            self._origin = uint16_add(self._origin, count - self._capacity)
            self._prev = None
            self._holes.clear()

    def _note_emitted(self, frame: JitterFrame) -> bool:
        """Update damage tracking for an emitted frame; returns whether it is damaged."""
        self._last_timestamp = frame.timestamp
        if is_keyframe(frame.data):
            self.damaged = False
        if not self.damaged:
            return False
        self._damaged_timestamps[frame.timestamp] = None
        while len(self._damaged_timestamps) > self._damaged_history:
            self._damaged_timestamps.popitem(last=False)
        return True


def install_low_latency_jitter_buffer(
    capacity: int = DEFAULT_CAPACITY,
    max_wait_ms: float = DEFAULT_MAX_WAIT_MS,
    max_capacity: int = DEFAULT_MAX_CAPACITY,
    max_pixels: int | None = None,
) -> None:
    """Make RTCRtpReceivers created from now on use LowLatencyJitterBuffer for video.

    Audio keeps aiortc's buffer. Idempotent; a second call replaces the parameters.
    """
    if capacity <= 0 or capacity & (capacity - 1):
        raise ValueError(f"capacity must be a power of two, got {capacity}")
    if max_wait_ms <= 0:
        raise ValueError(f"max_wait_ms must be positive, got {max_wait_ms}")

    video_capacity = capacity

    # Same call signature as JitterBuffer, which RTCRtpReceiver.__init__ looks up as a global.
    def factory(capacity: int, prefetch: int = 0, is_video: bool = False) -> JitterBuffer:
        if is_video:
            return LowLatencyJitterBuffer(
                video_capacity,
                max_wait_ms=max_wait_ms,
                max_capacity=max_capacity,
                max_pixels=max_pixels,
            )
        return _STOCK_JITTER_BUFFER(capacity=capacity, prefetch=prefetch, is_video=is_video)

    setattr(aiortc.rtcrtpreceiver, "JitterBuffer", factory)  # noqa: B010
    logger.info("low-latency video jitter buffer installed (capacity %d)", capacity)


def uninstall_low_latency_jitter_buffer() -> None:
    """Restore aiortc's own JitterBuffer for receivers created from now on."""
    setattr(aiortc.rtcrtpreceiver, "JitterBuffer", _STOCK_JITTER_BUFFER)  # noqa: B010


def low_latency_jitter_buffer_installed() -> bool:
    return getattr(aiortc.rtcrtpreceiver, "JitterBuffer") is not _STOCK_JITTER_BUFFER  # noqa: B009


def jitter_buffer_of(receiver: RTCRtpReceiver) -> LowLatencyJitterBuffer | None:
    """The LowLatencyJitterBuffer a receiver uses, or None (stock buffer, or not video)."""
    # aiortc has no public accessor: this is RTCRtpReceiver.__jitter_buffer, name-mangled.
    buffer = getattr(receiver, "_RTCRtpReceiver__jitter_buffer", None)
    return buffer if isinstance(buffer, LowLatencyJitterBuffer) else None
