"""The emulated Ethernet wire: a relay between two TAP devices (``python -m`` entry point).

Frames read from one TAP are written to the other after the per-direction link model in
``mobieye.netem.shaper`` (loss, bottleneck rate with a drop-tail queue, delay + jitter, kept in
order). Everything passes, ARP and IPv6 included: it is a wire, not a router.

This module is the relay helper process, ``python -m mobieye.netem.wire --fd-a A --fd-b B
...``, started by ``mobieye.netem.wire_process.WireProcess`` with the two TAP fds inherited.
A process rather than a thread of the caller: the benchmark driver that owns the link also
decodes video and runs a detector, and a relay thread would wait for that GIL for
milliseconds, the size of the delays being emulated. As its own process it also gets
real-time scheduling (SCHED_FIFO, falling back to a higher nice priority), so a busy machine
delays its wake-ups far less. Control is over stdin/stdout: each ``s`` byte on stdin asks for
one JSON stats line; EOF on stdin stops the relay, so it also stops when its parent dies, and
the TAPs vanish with it.

Timing: frames wait in one FIFO per direction (release times never decrease, so each FIFO is
already the heap of release times, and the next wake-up is the earlier of the two heads). The
loop sleeps in ``select`` on both TAPs and the control pipe until that release time, and polls
for the last few tens of microseconds. ``DirectionStats.mean_late_us``/``max_late_us`` report
how late frames actually left.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import random
import select
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from mobieye.netem.profiles import LinkProfile
from mobieye.netem.shaper import Shaper

# Frames read from one TAP per wake-up before serving the other: keeps a flood in one
# direction from starving the other.
_READ_BATCH = 256
# Safety cap on frames held per direction (the rate model bounds the queue; an unlimited-rate
# link with a long delay is only bounded by this).
_MAX_HELD = 100_000
# Below this remaining wait, poll instead of sleeping: a select timeout this short is mostly
# wake-up latency.
_SPIN_S = 50e-6
# Low real-time priority: above every normal process, below kernel threads that use RT.
_RT_PRIORITY = 10

Emit = Callable[[dict[str, Any]], None]


class _Direction:
    def __init__(self, src: int, dst: int, shaper: Shaper) -> None:
        self.src = src
        self.dst = dst
        self.shaper = shaper
        # (release time, arrival time, frame)
        self.held: collections.deque[tuple[float, float, bytes]] = collections.deque()
        self.cut = False  # the wire is cut: everything that arrives is lost (an outage)

    def ingest(self, now: float) -> None:
        for _ in range(_READ_BATCH):
            try:
                frame = os.read(self.src, 65536)
            except BlockingIOError:
                return
            if self.cut:
                self.shaper.stats.dropped_cut += 1
                continue
            release = self.shaper.admit(now, len(frame))
            if release is None:
                continue
            if len(self.held) >= _MAX_HELD:
                self.shaper.stats.dropped_queue += 1
                continue
            self.held.append((release, now, frame))

    def flush(self, now: float) -> None:
        held = self.held
        while held and held[0][0] <= now:
            release, arrival, frame = held.popleft()
            try:
                os.write(self.dst, frame)
            except OSError:
                # The peer TAP is down or its queue is full: the frame is lost, as on a wire.
                self.shaper.record_error()
                continue
            self.shaper.record_sent(len(frame), release - arrival, now - release)


class Relay:
    """The relay loop between TAP fds ``fd_a`` and ``fd_b``; runs until its control fd's EOF."""

    def __init__(
        self, fd_a: int, fd_b: int, control_fd: int, profile: LinkProfile, seed: int
    ) -> None:
        # One generator per direction so each direction's loss/jitter pattern depends only on
        # the seed and its own traffic.
        self._ab = _Direction(fd_a, fd_b, Shaper(profile, random.Random(f"{seed}:a->b")))
        self._ba = _Direction(fd_b, fd_a, Shaper(profile, random.Random(f"{seed}:b->a")))
        self._control = control_fd
        for fd in (fd_a, fd_b, control_fd):
            os.set_blocking(fd, False)

    def stats_payload(self) -> dict[str, Any]:
        """Both directions' counters as JSON-ready dicts (a->b is from ``fd_a`` to ``fd_b``)."""
        return {"a_to_b": asdict(self._ab.shaper.stats), "b_to_a": asdict(self._ba.shaper.stats)}

    def run(self, emit: Emit) -> None:
        """Relay until EOF on the control fd; ``emit(dict)`` sends one reply line."""
        ab, ba, control = self._ab, self._ba, self._control
        by_fd = {ab.src: ab, ba.src: ba}
        watch = [ab.src, ba.src, control]
        emit({"ready": True})
        while True:
            now = time.monotonic()
            ab.flush(now)
            ba.flush(now)
            timeout: float | None = None
            heads = [d.held[0][0] for d in (ab, ba) if d.held]
            if heads:
                timeout = max(0.0, min(heads) - time.monotonic())
                if timeout < _SPIN_S:
                    timeout = 0.0
            readable, _, _ = select.select(watch, [], [], timeout)
            if not readable:
                continue
            now = time.monotonic()
            for fd in readable:
                if fd != control:
                    by_fd[fd].ingest(now)
                elif not self._answer(emit):
                    return

    def _answer(self, emit: Emit) -> bool:
        """Serve control requests; False at EOF (after sending the final stats)."""
        try:
            request = os.read(self._control, 4096)
        except BlockingIOError:
            return True
        if not request:
            emit({"final": True, **self.stats_payload()})
            return False
        for byte in request:
            if byte == ord("s"):
                emit(self.stats_payload())
            elif byte in b"cr":  # cut the wire, restore it (the bench's --outage over a link)
                self._ab.cut = self._ba.cut = byte == ord("c")
                emit({"cut": self._ab.cut})
        return True


def _prioritize() -> None:
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(_RT_PRIORITY))
    except (OSError, AttributeError):
        # Not privileged (or no RT scheduling): a higher nice priority still helps.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, -10)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m mobieye.netem.wire",
        description="Relay Ethernet frames between two inherited TAP fds with link emulation.",
    )
    parser.add_argument("--fd-a", type=int, required=True)
    parser.add_argument("--fd-b", type=int, required=True)
    parser.add_argument("--name", default="custom")
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--loss", type=float, default=0.0)
    parser.add_argument("--rate-kbps", type=float, default=None)
    parser.add_argument("--queue-ms", type=float, default=100.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-realtime", action="store_true", help="do not ask for SCHED_FIFO scheduling"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    profile = LinkProfile(
        name=args.name,
        delay_ms=args.delay_ms,
        jitter_ms=args.jitter_ms,
        loss=args.loss,
        rate_kbps=args.rate_kbps,
        queue_ms=args.queue_ms,
    )
    # Ctrl-C reaches the whole process group; the parent decides when the wire stops (EOF).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not args.no_realtime:
        _prioritize()
    out = sys.stdout.buffer

    def emit(message: dict[str, Any]) -> None:
        out.write(json.dumps(message).encode() + b"\n")
        out.flush()

    relay = Relay(args.fd_a, args.fd_b, sys.stdin.fileno(), profile, args.seed)
    # BrokenPipeError: the parent is gone, nobody wants the stats.
    with contextlib.suppress(BrokenPipeError):
        relay.run(emit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
