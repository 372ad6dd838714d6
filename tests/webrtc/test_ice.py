"""ICE confinement, configuration and SDP candidate filtering."""

from __future__ import annotations

import aioice.ice
import pytest
from aiortc import RTCPeerConnection
from aiortc.rtcicetransport import RTCIceGatherer

from mobieye.webrtc.ice import (
    IceServerSpec,
    confine_to_loopback,
    filter_sdp_candidates,
    is_confined_to_loopback,
    rtc_configuration,
)

BROWSER_OFFER = "\r\n".join(
    [
        "v=0",
        "o=- 4215775240449102353 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0",
        "a=msid-semantic: WMS",
        "m=video 54321 UDP/TLS/RTP/SAVPF 96 97",
        "c=IN IP4 203.0.113.7",
        "a=rtcp:9 IN IP4 0.0.0.0",
        "a=candidate:1467250027 1 udp 2122260223 192.168.1.23 54321 typ host generation 0"
        " network-id 1 network-cost 10",
        "a=candidate:2999745851 1 udp 2122194687 3f1c2b7e-6d0a-4f6b-9c43-2b1f5e7a9d10.local"
        " 54322 typ host generation 0 network-id 2",
        "a=candidate:842163049 1 udp 1686052607 203.0.113.7 54321 typ srflx raddr 192.168.1.23"
        " rport 54321 generation 0 network-id 1 network-cost 10",
        "a=candidate:1510613869 1 tcp 1518280447 192.168.1.23 9 typ host tcptype active"
        " generation 0 network-id 1",
        "a=candidate:3009745855 1 udp 2122129151 127.0.0.1 50000 typ host generation 0",
        "a=candidate:3009745856 1 udp 2122129150 ::1 50001 typ host generation 0",
        "a=candidate:4009745857 1 udp 2122129149 MyLaptop.LOCAL. 50002 typ host generation 0",
        "a=ice-ufrag:EsAw",
        "a=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y",
        "a=fingerprint:sha-256 D2:FA:0E:C3:22:59:5E:14:95:69:92:3D:13:B4:84:24:2C:C2:A2:C0:3E"
        ":FD:34:8E:5E:EA:6F:AF:52:CE:E6:0F",
        "a=setup:actpass",
        "a=mid:0",
        "a=sendonly",
        "a=rtpmap:96 VP8/90000",
        "a=rtpmap:97 rtx/90000",
        "a=fmtp:97 apt=96",
        "",
    ]
)


def _candidate_addresses(sdp: str) -> list[str]:
    return [line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate:")]


def test_loopback_only_keeps_loopback_candidates() -> None:
    filtered = filter_sdp_candidates(BROWSER_OFFER, loopback_only=True)
    assert _candidate_addresses(filtered) == ["127.0.0.1", "::1"]
    # Everything else is untouched, CRLF line endings included.
    expected = "".join(
        line
        for line in BROWSER_OFFER.splitlines(keepends=True)
        if not line.startswith("a=candidate:") or " 127.0.0.1 " in line or " ::1 " in line
    )
    assert filtered == expected


def test_mdns_candidates_are_always_dropped() -> None:
    filtered = filter_sdp_candidates(BROWSER_OFFER, loopback_only=False)
    assert _candidate_addresses(filtered) == [
        "192.168.1.23",
        "203.0.113.7",
        "192.168.1.23",
        "127.0.0.1",
        "::1",
    ]


def test_filter_without_candidates_is_identity() -> None:
    sdp = "v=0\r\ns=-\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
    assert filter_sdp_candidates(sdp, loopback_only=True) == sdp


def test_confine_is_idempotent_and_gathers_only_loopback() -> None:
    confine_to_loopback()
    confine_to_loopback()
    assert is_confined_to_loopback()
    assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True) == ["127.0.0.1"]
    assert RTCIceGatherer.getDefaultIceServers() == []


def test_rtc_configuration_is_never_none() -> None:
    assert rtc_configuration(None).iceServers == []
    assert rtc_configuration([]).iceServers == []
    config = rtc_configuration(
        [IceServerSpec(urls=["turn:127.0.0.1:3478"], username="u", credential="p")]
    )
    assert config.iceServers is not None
    (server,) = config.iceServers
    assert (server.urls, server.username, server.credential) == (["turn:127.0.0.1:3478"], "u", "p")


@pytest.mark.asyncio
async def test_offer_contains_only_loopback_candidates() -> None:
    confine_to_loopback()
    pc = RTCPeerConnection(rtc_configuration([]))
    try:
        pc.addTransceiver("video")
        await pc.setLocalDescription(await pc.createOffer())
        addresses = _candidate_addresses(pc.localDescription.sdp)
        assert addresses and set(addresses) == {"127.0.0.1"}
    finally:
        await pc.close()
