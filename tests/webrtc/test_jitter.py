"""LowLatencyJitterBuffer on synthetic RTP packets."""

from __future__ import annotations

import random
from dataclasses import dataclass

import aiortc.rtcrtpreceiver
import pytest
from aiortc import RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket

from mobieye.webrtc.ice import rtc_configuration
from mobieye.webrtc.jitter import (
    LowLatencyJitterBuffer,
    install_low_latency_jitter_buffer,
    jitter_buffer_of,
    low_latency_jitter_buffer_installed,
    uninstall_low_latency_jitter_buffer,
)

FRAME_TICKS = 3000
VP8_KEY_HEADER = b"\x50\x02\x00\x9d\x01\x2a\x80\x02\xe0\x01"
VP8_DELTA_HEADER = b"\x31\x02\x00"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance_ms(self, ms: float) -> None:
        self.now += ms / 1000.0


@dataclass
class Frame:
    timestamp: int
    packets: list[RtpPacket]

    @property
    def data(self) -> bytes:
        return b"".join(p._data for p in self.packets)  # type: ignore[attr-defined]


def make_packet(seq: int, ts: int, marker: bool, data: bytes) -> RtpPacket:
    packet = RtpPacket(
        payload_type=96, marker=int(marker), sequence_number=seq % 65536, timestamp=ts
    )
    packet._data = data  # type: ignore[attr-defined]
    return packet


def shifted(packet: RtpPacket, by: int) -> RtpPacket:
    data: bytes = packet._data  # type: ignore[attr-defined]
    return make_packet(packet.sequence_number + by, packet.timestamp, bool(packet.marker), data)


def make_stream(
    count: int,
    packets_per_frame: int = 3,
    first_seq: int = 1000,
    first_ts: int = 90_000,
    keyframes: tuple[int, ...] = (0,),
    marker: bool = True,
) -> list[Frame]:
    frames = []
    seq = first_seq
    for index in range(count):
        ts = (first_ts + index * FRAME_TICKS) % (1 << 32)
        header = VP8_KEY_HEADER if index in keyframes else VP8_DELTA_HEADER
        packets = []
        for part in range(packets_per_frame):
            data = (header if part == 0 else b"") + f"|f{index}p{part}".encode()
            last = part == packets_per_frame - 1
            packets.append(make_packet(seq, ts, marker and last, data))
            seq += 1
        frames.append(Frame(ts, packets))
    return frames


def feed(
    buffer: JitterBuffer, packets: list[RtpPacket]
) -> list[tuple[int, bool, JitterFrame | None]]:
    """(sequence number, pli, frame) for every packet added."""
    out = []
    for packet in packets:
        pli, frame = buffer.add(packet)
        out.append((packet.sequence_number, pli, frame))
    return out


def emitted(results: list[tuple[int, bool, JitterFrame | None]]) -> list[JitterFrame]:
    return [frame for _, _, frame in results if frame is not None]


def test_frame_released_on_its_marker_packet() -> None:
    frames = make_stream(2)
    results = feed(LowLatencyJitterBuffer(clock=FakeClock()), frames[0].packets)
    assert [frame is not None for _, _, frame in results] == [False, False, True]
    frame = results[-1][2]
    assert frame is not None
    assert frame.data == frames[0].data
    assert frame.timestamp == frames[0].timestamp


def test_stock_buffer_waits_for_next_frame() -> None:
    # The latency this module removes: aiortc holds a complete frame until the next one starts.
    frames = make_stream(2)
    stock = JitterBuffer(capacity=512, is_video=True)
    assert emitted(feed(stock, frames[0].packets)) == []
    first_of_next = feed(stock, frames[1].packets[:1])
    assert [f.timestamp for f in emitted(first_of_next)] == [frames[0].timestamp]


def test_every_frame_once_in_order_even_with_duplicates() -> None:
    frames = make_stream(20)
    buffer = LowLatencyJitterBuffer(clock=FakeClock())
    packets = []
    for frame in frames:
        for packet in frame.packets:
            packets += [packet, packet]  # every packet duplicated
        packets += frame.packets[:1]  # and a late retransmission after the frame is out
    out = emitted(feed(buffer, packets))
    assert [f.timestamp for f in out] == [f.timestamp for f in frames]
    assert [f.data for f in out] == [f.data for f in frames]
    assert buffer.frames_on_marker == 20
    assert not buffer.damaged


def test_reordering_within_a_frame() -> None:
    frame = make_stream(1, packets_per_frame=4)[0]
    p = frame.packets
    results = feed(LowLatencyJitterBuffer(clock=FakeClock()), [p[0], p[3], p[2], p[1]])
    assert [f is not None for _, _, f in results] == [False, False, False, True]
    assert emitted(results)[0].data == frame.data


def test_reordered_marker_packet_arrives_after_next_frame_starts() -> None:
    a, b = make_stream(2)
    buffer = LowLatencyJitterBuffer(clock=FakeClock())
    out = feed(buffer, [a.packets[0], a.packets[1], b.packets[0], a.packets[2], *b.packets[1:]])
    assert [(f.timestamp, f.data) for f in emitted(out)] == [
        (a.timestamp, a.data),
        (b.timestamp, b.data),
    ]
    assert out[3][2] is not None  # A on its late marker packet
    assert not any(pli for _, pli, _ in out)


def test_marker_less_sender_uses_next_frame_start() -> None:
    frames = make_stream(3, marker=False)
    buffer = LowLatencyJitterBuffer(clock=FakeClock())
    results = feed(buffer, [p for f in frames for p in f.packets])
    out = emitted(results)
    assert [f.data for f in out] == [frames[0].data, frames[1].data]
    assert results[3][2] is not None  # frame 0 completed by frame 1's first packet
    assert buffer.frames_on_next_frame == 2


def stream_with_clock(
    buffer: LowLatencyJitterBuffer, clock: FakeClock, frames: list[Frame], skip: set[int]
) -> list[tuple[int, bool, JitterFrame | None]]:
    """Feed frames 33 ms apart, leaving out the packets whose sequence numbers are in skip."""
    results = []
    for frame in frames:
        packets = [p for p in frame.packets if p.sequence_number not in skip]
        results += feed(buffer, packets)
        clock.advance_ms(33)
    return results


def test_lost_packet_dropped_after_max_wait_then_damaged_until_keyframe() -> None:
    clock = FakeClock()
    buffer = LowLatencyJitterBuffer(max_wait_ms=100, clock=clock)
    frames = make_stream(12, keyframes=(0, 8))
    lost = frames[1].packets[1].sequence_number  # never retransmitted
    results = stream_with_clock(buffer, clock, frames, skip={lost})
    out = emitted(results)

    # Frame 1 is never emitted; everything else is, once, whole and in order.
    assert [f.timestamp for f in out] == [f.timestamp for i, f in enumerate(frames) if i != 1]
    assert {f.timestamp: f.data for f in out} == {
        f.timestamp: f.data for i, f in enumerate(frames) if i != 1
    }
    # Nothing after the hole came out until the time bound expired, and then a PLI went out.
    plis = [i for i, (_, pli, _) in enumerate(results) if pli]
    first_after_hole = next(
        i for i, (_, _, f) in enumerate(results) if f and f.timestamp > frames[1].timestamp
    )
    assert plis and plis[0] == first_after_hole
    assert first_after_hole >= 3 * 4  # frames 2..4 waited behind the hole (>100 ms at 33 ms)

    # Frames 2..7 depend on the dropped data; the keyframe 8 and what follows are clean.
    assert [buffer.is_damaged(f.timestamp) for f in frames] == [False] * 2 + [True] * 6 + [
        False
    ] * 4
    assert not buffer.damaged
    assert buffer.packets_dropped == 2  # frame 1's two packets that did arrive


def test_retransmission_within_max_wait_loses_nothing() -> None:
    clock = FakeClock()
    buffer = LowLatencyJitterBuffer(max_wait_ms=100, clock=clock)
    frames = make_stream(6)
    late = frames[1].packets[1]
    results = stream_with_clock(buffer, clock, frames[:3], skip={late.sequence_number})
    clock.advance_ms(20)
    results += feed(buffer, [late])
    results += stream_with_clock(buffer, clock, frames[3:], skip=set())
    assert [f.timestamp for f in emitted(results)] == [f.timestamp for f in frames]
    assert not any(pli for _, pli, _ in results)
    assert not buffer.damaged and buffer.packets_dropped == 0


def test_overflow_at_capacity_64_drops_and_requests_keyframe() -> None:
    clock = FakeClock()
    # A time bound that never expires: only the capacity can get rid of the hole.
    buffer = LowLatencyJitterBuffer(capacity=64, max_wait_ms=1e9, clock=clock)
    frames = make_stream(40, keyframes=(0, 30))
    lost = frames[1].packets[0].sequence_number
    results = stream_with_clock(buffer, clock, frames, skip={lost})
    out = emitted(results)
    originals = {f.timestamp: f.data for f in frames}
    assert all(originals[f.timestamp] == f.data for f in out)  # never a partial frame
    assert len({f.timestamp for f in out}) == len(out)
    overflow_at = next(i for i, (_, pli, _) in enumerate(results) if pli)
    assert results[overflow_at][0] == lost + 64  # the first packet that did not fit
    assert buffer.capacity == 64  # a hole is never a reason to grow
    assert frames[1].timestamp not in {f.timestamp for f in out}
    assert buffer.is_damaged(out[1].timestamp)
    assert out[-1].timestamp == frames[-1].timestamp and not buffer.is_damaged(out[-1].timestamp)


def test_frame_larger_than_capacity_grows_instead_of_dropping() -> None:
    frames = make_stream(2, packets_per_frame=150)
    buffer = LowLatencyJitterBuffer(capacity=64, clock=FakeClock())
    results = feed(buffer, [p for f in frames for p in f.packets])
    assert [f.data for f in emitted(results)] == [f.data for f in frames]
    assert not any(pli for _, pli, _ in results)
    assert buffer.capacity == 256


def test_sequence_restart_resets_and_requests_keyframe() -> None:
    buffer = LowLatencyJitterBuffer(clock=FakeClock())
    feed(buffer, make_stream(2)[0].packets)
    restarted = make_stream(2, first_seq=500, first_ts=10_000_000, keyframes=(1,))
    results = feed(buffer, [p for f in restarted for p in f.packets])
    assert results[0][1]  # PLI on the reset
    # The first packet after a reset cannot be trusted to start a frame; the next frame can.
    assert [f.timestamp for f in emitted(results)] == [restarted[1].timestamp]
    assert not buffer.damaged


def test_stray_packet_of_emitted_frame_is_not_damage() -> None:
    a, b = make_stream(2, keyframes=(0,))
    padding = make_packet(a.packets[-1].sequence_number + 1, a.timestamp, False, b"")
    b_packets = [shifted(p, 1) for p in b.packets]
    buffer = LowLatencyJitterBuffer(clock=FakeClock())
    out = emitted(feed(buffer, [*a.packets, padding, *b_packets]))
    assert [f.timestamp for f in out] == [a.timestamp, b.timestamp]
    assert not buffer.damaged and not buffer.is_damaged(b.timestamp)


def test_no_keyframe_yet_means_damaged() -> None:
    frames = make_stream(2, keyframes=())
    buffer = LowLatencyJitterBuffer(clock=FakeClock())
    results = feed(buffer, frames[0].packets)
    assert results[-1][1]  # asks for the keyframe it never had
    assert buffer.is_damaged(frames[0].timestamp)


def test_is_damaged_accepts_unwrapped_timestamps() -> None:
    clock = FakeClock()
    buffer = LowLatencyJitterBuffer(clock=clock)
    frames = make_stream(3, first_ts=(1 << 32) - 3000, keyframes=())
    out = emitted(stream_with_clock(buffer, clock, frames, skip=set()))
    assert out[-1].timestamp == 3000
    assert buffer.is_damaged(3000 + (1 << 32))


@pytest.mark.parametrize("seed", range(8))
def test_random_loss_reorder_duplication_never_partial_or_duplicate(seed: int) -> None:
    rng = random.Random(seed)
    clock = FakeClock()
    buffer = LowLatencyJitterBuffer(capacity=64, max_wait_ms=100, clock=clock)
    frames = make_stream(
        300, packets_per_frame=rng.choice([1, 3, 7]), first_seq=65_000, keyframes=(0, 100, 200)
    )
    packets = [p for f in frames for p in f.packets if rng.random() > 0.03]
    # Local reordering, duplicates, and late retransmissions.
    for i in range(len(packets) - 3):
        if rng.random() < 0.1:
            j = i + rng.randint(1, 3)
            packets[i], packets[j] = packets[j], packets[i]
    for _ in range(len(packets) // 20):
        i = rng.randrange(10, len(packets) - 10)
        packets.insert(i, packets[i + rng.randint(-10, 10)])
    results = []
    for packet in packets:
        clock.advance_ms(rng.uniform(0, 15))
        results += feed(buffer, [packet])
    out = emitted(results)
    originals = {f.timestamp: f.data for f in frames}
    assert all(originals[f.timestamp] == f.data for f in out)
    timestamps = [f.timestamp for f in out]
    assert timestamps == sorted(set(timestamps))
    assert len(out) > 100


def test_install_replaces_video_buffer_only() -> None:
    assert not low_latency_jitter_buffer_installed()
    install_low_latency_jitter_buffer(capacity=128)
    install_low_latency_jitter_buffer(capacity=64)  # idempotent: the last call wins
    factory = aiortc.rtcrtpreceiver.JitterBuffer  # type: ignore[attr-defined]
    video = factory(capacity=512, is_video=True)
    audio = factory(capacity=16, prefetch=4)
    assert isinstance(video, LowLatencyJitterBuffer) and video.capacity == 64
    assert type(audio) is JitterBuffer and audio.capacity == 16
    uninstall_low_latency_jitter_buffer()
    assert not low_latency_jitter_buffer_installed()
    assert aiortc.rtcrtpreceiver.JitterBuffer is JitterBuffer  # type: ignore[attr-defined]


def test_install_rejects_bad_capacity() -> None:
    with pytest.raises(ValueError):
        install_low_latency_jitter_buffer(capacity=100)


@pytest.mark.asyncio
async def test_jitter_buffer_of_finds_receivers_buffer() -> None:
    install_low_latency_jitter_buffer()
    pc = RTCPeerConnection(rtc_configuration([]))
    try:
        video = pc.addTransceiver("video")
        audio = pc.addTransceiver("audio")
        assert isinstance(jitter_buffer_of(video.receiver), LowLatencyJitterBuffer)
        assert jitter_buffer_of(audio.receiver) is None
    finally:
        await pc.close()
