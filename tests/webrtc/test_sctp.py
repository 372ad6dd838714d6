"""The data channel's retransmission floor, as aiortc's SCTP uses it."""

from __future__ import annotations

import pytest
from aiortc import rtcsctptransport

from mobieye.webrtc.sctp import sctp_rto_min, set_sctp_rto_min


def test_the_floor_bounds_the_timer_and_the_first_timeout_is_rfc_6298s() -> None:
    before = (rtcsctptransport.SCTP_RTO_MIN, rtcsctptransport.SCTP_RTO_INITIAL)
    try:
        set_sctp_rto_min(0.2)
        assert sctp_rto_min() == 0.2 and rtcsctptransport.SCTP_RTO_INITIAL == 1.0
        transport = rtcsctptransport.RTCSctpTransport.__new__(rtcsctptransport.RTCSctpTransport)
        transport._srtt = None
        transport._update_rto(0.04)  # a short round trip: the timer is its floor...
        assert transport._rto == pytest.approx(0.2)
        transport._update_rto(0.9)  # ...and follows a slow path above it
        assert transport._rto > 0.9
        with pytest.raises(ValueError):
            set_sctp_rto_min(2.0)
    finally:
        rtcsctptransport.SCTP_RTO_MIN, rtcsctptransport.SCTP_RTO_INITIAL = before
