"""The data channel's retransmission floor (aiortc's SCTP RTO minimum).

aiortc follows RFC 4960: a lost chunk that no later chunk reveals (the tail of a message, when
nothing follows it) waits for the retransmission timer, never less than ``SCTP_RTO_MIN`` = 1 s.
A keyframe still is a burst of a few packets and then silence, so on a lossy link (LTE, 1%
loss) a still lost at its tail came back a second late: the edge-first keyframe round trip had
a p95 of 1.1 s. The timer is still the smoothed round trip plus four deviations (RFC 6298);
only its floor moves, so a slow path is not retransmitted early. The first timeout, before any
round trip is measured, is 1 s as in RFC 6298 (RFC 4960's 3 s cost a start-up that lost its
first data-channel message three seconds without boxes: 54 frames in one LTE run).
"""

from __future__ import annotations

from aiortc import rtcsctptransport

RFC_RTO_MIN_S = 1.0
INITIAL_RTO_S = 1.0  # RFC 6298 2.1


def set_sctp_rto_min(seconds: float) -> None:
    """Process-wide: the floor of every SCTP association's retransmission timeout."""
    if not 0.01 <= seconds <= RFC_RTO_MIN_S:
        raise ValueError(f"SCTP RTO minimum must be 0.01..{RFC_RTO_MIN_S} s, got {seconds}")
    rtcsctptransport.SCTP_RTO_MIN = seconds  # type: ignore[assignment]
    rtcsctptransport.SCTP_RTO_INITIAL = max(seconds, INITIAL_RTO_S)


def sctp_rto_min() -> float:
    return float(rtcsctptransport.SCTP_RTO_MIN)
