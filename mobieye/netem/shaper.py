"""Per-direction link model: decides, for each frame, whether and when it leaves the wire.

Pure computation on timestamps, so it is testable without root or devices. Order of effects,
as on a real path: random loss, then the bottleneck queue (drop-tail) and its serialization
delay at ``rate_kbps``, then propagation delay plus jitter. Release times never decrease: a
frame leaves no earlier than the one before it, because real links rarely reorder and video
receivers treat reordering as loss. The cost of that rule is a bias: when frames are closer
together than the jitter spread, each waits for the slowest before it, so the mean one-way
delay drifts toward ``delay_ms + jitter_ms`` under load. A video frame sent as a burst of N
packets arrives when the slowest of N draws does (lte, before serialization: 35 ms for one
packet, ~45 ms for 5, ~48 ms for 20). ``DirectionStats.mean_delay_ms`` reports the delay
actually applied.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from mobieye.netem.profiles import LinkProfile


@dataclass
class DirectionStats:
    """Counters for one direction of the wire."""

    received: int = 0
    forwarded: int = 0
    dropped_loss: int = 0
    dropped_queue: int = 0
    dropped_error: int = 0
    dropped_cut: int = 0  # while the wire was cut (an outage)
    bytes_forwarded: int = 0
    delay_sum_s: float = 0.0
    late_sum_s: float = 0.0
    late_max_s: float = 0.0

    @property
    def dropped(self) -> int:
        return self.dropped_loss + self.dropped_queue + self.dropped_error + self.dropped_cut

    @property
    def mean_delay_ms(self) -> float:
        """Mean delay the model assigned (queueing + serialization + propagation + jitter)."""
        return 1000.0 * self.delay_sum_s / self.forwarded if self.forwarded else 0.0

    @property
    def mean_late_us(self) -> float:
        """How late the relay wrote frames versus their release time, on average."""
        return 1e6 * self.late_sum_s / self.forwarded if self.forwarded else 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "received": self.received,
            "forwarded": self.forwarded,
            "dropped": self.dropped,
            "dropped_loss": self.dropped_loss,
            "dropped_queue": self.dropped_queue,
            "dropped_error": self.dropped_error,
            "dropped_cut": self.dropped_cut,
            "bytes_forwarded": self.bytes_forwarded,
            "mean_delay_ms": round(self.mean_delay_ms, 4),
            "mean_late_us": round(self.mean_late_us, 2),
            "max_late_us": round(1e6 * self.late_max_s, 2),
        }


class Shaper:
    """Schedules one direction's frames; call ``admit`` with each frame's arrival time."""

    def __init__(self, profile: LinkProfile, rng: random.Random) -> None:
        self._rng = rng
        self._delay_s = profile.delay_ms / 1000.0
        self._jitter_s = profile.jitter_ms / 1000.0
        self._loss = profile.loss
        # Seconds per byte on the bottleneck; 0 means no bottleneck.
        self._s_per_byte = 8.0 / (profile.rate_kbps * 1000.0) if profile.rate_kbps else 0.0
        self._queue_s = profile.queue_ms / 1000.0
        self._link_free_at = 0.0  # when the bottleneck finishes its current backlog
        self._last_release = 0.0
        self.stats = DirectionStats()

    def admit(self, now: float, size: int) -> float | None:
        """Release time for a ``size``-byte frame arriving at ``now``, or None if dropped."""
        self.stats.received += 1
        # Draw the loss coin first and always, so a seed gives the same loss pattern whatever
        # the rate and queue do.
        if self._loss and self._rng.random() < self._loss:
            self.stats.dropped_loss += 1
            return None
        sent = now
        if self._s_per_byte:
            start = max(now, self._link_free_at)
            if start - now > self._queue_s:
                self.stats.dropped_queue += 1
                return None
            sent = start + size * self._s_per_byte
            self._link_free_at = sent
        delay = self._delay_s
        if self._jitter_s:
            delay = max(0.0, delay + self._rng.uniform(-self._jitter_s, self._jitter_s))
        release = max(sent + delay, self._last_release)
        self._last_release = release
        return release

    def record_sent(self, size: int, delay_s: float, late_s: float) -> None:
        """Account a frame held ``delay_s`` by the model and written ``late_s`` after release."""
        self.stats.forwarded += 1
        self.stats.bytes_forwarded += size
        self.stats.delay_sum_s += delay_s
        self.stats.late_sum_s += late_s
        self.stats.late_max_s = max(self.stats.late_max_s, late_s)

    def record_error(self) -> None:
        self.stats.dropped_error += 1
