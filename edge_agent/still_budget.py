"""The edge-first uplink's budget and still quality (pure; no I/O).

A token bucket over ``controller.uplink_kbps`` decides whether a keyframe still may go now;
the still quality follows two measured signals once a period: keyframes the budget had to
refuse (quality down: smaller stills fit more often) and the keyframe round trip against the
SLA (quality down: smaller stills cross a slow link sooner); ample room on both lets it climb
back. Without a budget only the SLA governs quality.
"""

from __future__ import annotations

from dataclasses import dataclass

DEPTH_S = 4.0  # the bucket holds this many seconds of budget: a burst of stills on a scene cut
START_QUALITY = 75
# Below this the cloud's model sees little more than the device's: on TUD-Campus stills (WebP,
# 480 wide) its boxes scored F1 0.90 against its own on the full frames at quality 30, 0.96 at
# 75 (the device model on the full frames: 0.88).
MIN_QUALITY = 60
MAX_QUALITY = 90
STEP_DOWN = 10
STEP_UP = 5


@dataclass
class BudgetPeriod:
    """What happened since the last adjustment."""

    wanted: int = 0  # keyframes the policy asked for
    refused: int = 0  # ...that the budget could not pay for


class StillBudget:
    """``estimate``: the bytes of the next still at the current quality, from the last one
    encoded (0 before any: the first still is never refused; it may overdraw the bucket, and
    the next ones wait until it is repaid)."""

    def __init__(self, kbps: float | None, quality: int = START_QUALITY) -> None:
        self.kbps = kbps
        self.quality = quality
        self.depth = kbps * 1000 / 8 * DEPTH_S if kbps is not None else float("inf")
        self._tokens = self.depth
        self._at: float | None = None
        self.period = BudgetPeriod()
        self.estimate = 0
        self.estimate_quality = quality  # the quality ``estimate`` was measured at
        self.sent_bytes = 0
        self.sent = 0

    def _refill(self, now: float) -> None:
        if self.kbps is not None and self._at is not None:
            self._tokens = min(self.depth, self._tokens + (now - self._at) * self.kbps * 125)
        self._at = now

    def allows(self, now: float) -> bool:
        """Whether a still may go now (the policy wants one)."""
        self._refill(now)
        self.period.wanted += 1
        ok = self._tokens >= self.estimate
        self.period.refused += not ok
        return ok

    @property
    def stale(self) -> bool:
        """The estimate is of another quality: encode one still to measure it again (a
        budget that refuses everything would otherwise never learn that a lower quality fits)."""
        return self.estimate_quality != self.quality

    def observe(self, nbytes: int) -> None:
        """A still was encoded at the current quality (sent or not)."""
        self.estimate, self.estimate_quality = nbytes, self.quality

    def spend(self, now: float, nbytes: int) -> None:
        self._refill(now)
        self._tokens -= nbytes
        self.sent_bytes += nbytes
        self.sent += 1
        self.observe(nbytes)

    def too_small(self) -> str | None:
        """Why no still can ever fit (the budget's bucket is smaller than a still at the lowest
        quality), or None."""
        if self.kbps is None or self.quality > MIN_QUALITY or self.stale:
            return None
        if self.estimate <= self.depth:
            return None
        return (
            f"controller.uplink_kbps={self.kbps:g} holds {self.depth / 1000:.1f} KB per "
            f"{DEPTH_S:g} s, but a still at the lowest quality ({MIN_QUALITY}) is "
            f"{self.estimate / 1000:.1f} KB: no keyframe fits"
        )

    def adjust(self, keyframe_p95_ms: float | None, sla_ms: float) -> int:
        """Once a period: the quality for the next stills."""
        p, self.period = self.period, BudgetPeriod()
        over_sla = keyframe_p95_ms is not None and keyframe_p95_ms > sla_ms
        if p.refused or over_sla:
            self.quality = max(MIN_QUALITY, self.quality - STEP_DOWN)
        elif p.wanted and (keyframe_p95_ms is None or keyframe_p95_ms < 0.5 * sla_ms):
            # Climb only with room: a budget at least half full, or no budget (then no higher
            # than the starting quality: detection gains nothing from finer JPEG detail).
            if self.kbps is None:
                self.quality = min(START_QUALITY, self.quality + STEP_UP)
            elif self._tokens >= 0.5 * self.depth:
                self.quality = min(MAX_QUALITY, self.quality + STEP_UP)
        return self.quality
