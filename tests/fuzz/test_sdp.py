"""SDP offers as the worker takes them (cloud_worker/offers.py parse_offer and check_sdp, then
mobieye/webrtc filter_sdp_candidates, then aiortc's RTCSessionDescription and
RTCPeerConnection.setRemoteDescription), from mutations of a real aiortc offer.

Properties: parse_offer returns the offer or a 400 saying why; what check_sdp lets through is
what aiortc then sees (one video, at most one data channel); the candidates aiortc takes from a
filtered offer are the ones the filter meant to keep; aiortc answers or raises an Exception
(the route's "SDP rejected") without hanging, and the connection closes afterwards.

No traffic: ICE never starts (no setLocalDescription), host addresses are confined to loopback
and mDNS resolution is disabled, so even a candidate the filter missed goes nowhere.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import aioice.mdns
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import SessionDescription
from fastapi.responses import JSONResponse
from hypothesis import given
from hypothesis import strategies as st

from cloud_worker.context import WorkerContext
from cloud_worker.offers import OfferRequest, check_sdp, parse_offer, sdp_rejection
from cloud_worker.viewers import check_view_sdp
from mobieye.config import load_settings
from mobieye.webrtc.ice import confine_to_loopback, filter_sdp_candidates
from tests.fuzz.common import FUZZ, OBSERVED, backstop_s, counted, short, within
from tests.fuzz.strategies import dumps, json_values

pytestmark = pytest.mark.timeout(backstop_s(per_case_s=1.0))

# A real offer from aiortc 1.16 (video send-only and a data channel), one fingerprint kept.
OFFER = """v=0
o=- 4005183769 4005183769 IN IP4 0.0.0.0
s=-
t=0 0
a=group:BUNDLE 0 1
a=msid-semantic:WMS *
m=video 45024 UDP/TLS/RTP/SAVPF 97 98 99 100
c=IN IP4 127.0.0.1
a=sendonly
a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid
a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=mid:0
a=msid:d94472f3-f657-4bd8-be67-69464dc3a1b9 c697efed-0f2f-4fee-ba37-2494816ac9cb
a=rtcp:9 IN IP4 0.0.0.0
a=rtcp-mux
a=ssrc-group:FID 452653512 1752645248
a=ssrc:452653512 cname:1fcffeda-069c-4f4d-a5f5-c4671d163b4d
a=ssrc:1752645248 cname:1fcffeda-069c-4f4d-a5f5-c4671d163b4d
a=rtpmap:97 VP8/90000
a=rtcp-fb:97 nack
a=rtcp-fb:97 nack pli
a=rtcp-fb:97 goog-remb
a=rtpmap:98 rtx/90000
a=fmtp:98 apt=97
a=rtpmap:99 H264/90000
a=rtcp-fb:99 nack pli
a=fmtp:99 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f
a=rtpmap:100 rtx/90000
a=fmtp:100 apt=99
a=candidate:16572de626da4e5384a0ce2d0d93678a 1 udp 2130706431 127.0.0.1 45024 typ host
a=end-of-candidates
a=ice-ufrag:aQ1X
a=ice-pwd:42iw2FwwUhlC95YAoNQdov
a=fingerprint:sha-256 87:23:6E:51:DF:44:F5:98:AC:47:2D:F4:FD:BB:58:8A:2F:BF:87:52:E9:CF:EE:DA:D1:4F:32:40:81:91:43:CA
a=setup:actpass
m=application 58031 UDP/DTLS/SCTP webrtc-datachannel
c=IN IP4 127.0.0.1
a=mid:1
a=sctp-port:5000
a=max-message-size:262144
a=candidate:16572de626da4e5384a0ce2d0d93678a 1 udp 2130706431 127.0.0.1 58031 typ host
a=end-of-candidates
a=ice-ufrag:aQ1X
a=ice-pwd:42iw2FwwUhlC95YAoNQdov
a=fingerprint:sha-256 87:23:6E:51:DF:44:F5:98:AC:47:2D:F4:FD:BB:58:8A:2F:BF:87:52:E9:CF:EE:DA:D1:4F:32:40:81:91:43:CA
a=setup:actpass
"""  # noqa: E501
LINES = OFFER.splitlines()

# Lines a peer could add: other media, odd directions, candidates on other hosts, bad values.
EXTRA_LINES = [
    "m=audio 9 UDP/TLS/RTP/SAVPF 111", "m=video 9 UDP/TLS/RTP/SAVPF 96", "m=video 0 RTP/AVP 0",
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel", "m=text 9 RTP/AVP 0", "m=video",
    "a=rtpmap:111 opus/48000/2", "a=rtpmap:96 VP8/90000", "a=rtpmap:300 VP8/90000",
    "a=rtpmap:97 H265/90000", "a=rtpmap:97", "a=fmtp:97 apt=", "a=fmtp:97 x-google-max-bitrate=1",
    "a=sendrecv", "a=recvonly", "a=inactive", "a=setup:bogus", "a=setup:", "a=fingerprint:",
    "a=fingerprint:sha-1 00", "a=ice-ufrag:", "a=ice-pwd:", "a=mid:", "a=mid:0", "a=rtcp-mux",
    "a=ssrc:notanumber cname:x", "a=ssrc-group:FID 1", "a=extmap:99999 urn:x",
    "a=extmap:1/sendonly",
    "a=sctp-port:-1", "a=sctp-port:70000", "a=max-message-size:", "a=group:BUNDLE 0 1 2 3",
    "a=group:BUNDLE", "a=msid-semantic:", "c=IN IP4 ", "c=IN IP6 ::1", "c=IN IP4 not-an-ip", "v=1",
    "a=candidate:1 1 udp 1 10.0.0.5 9 typ host", "a=candidate:1 1 udp 1 192.168.1.2 9 typ host",
    "a=candidate:1 1 udp 1 abcd.local 9 typ host", "a=candidate:1 1 udp 1 ABCD.LOCAL. 9 typ host",
    "a=candidate:1 1 udp 1 example.com 9 typ host", "a=candidate:1 1 udp 1 127.0.0.2 9 typ host",
    "a=candidate:1 1 udp 1 ::1 9 typ host", "a=candidate:1 1 tcp 1 127.0.0.1 9 typ host tcptype x",
    "a=candidate:1 1 udp 1 127.0.0.1 9 typ srflx raddr 10.0.0.1 rport 9", "a=candidate:",
    "a=candidate: 1 1 udp 1 abcd.local 9 typ host", "a=candidate:1 1 udp 1 127.0.0.1 x typ host",
    "a=end-of-candidates", "a=ice-lite", "a=ice-options:trickle", "a=rtcp-fb:97 ccm fir",
]  # fmt: skip
# The one line ending the worker's checks assume, and the others str.splitlines() knows.
NEWLINES = ["\r\n", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x85", "\u2028"]
TOKENS = ["", " ", "0", "-1", "65536", "4294967296", "x", ":", "/", "\x00", "é", "a" * 500]


@st.composite
def offers(draw: st.DrawFn) -> str:
    """The real offer, mutated line by line, joined mostly as aiortc writes it."""
    lines = list(LINES)
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.sampled_from(["insert", "delete", "replace", "token", "swap", "dup"]))
        i = draw(st.integers(0, len(lines) - 1)) if lines else 0
        if op == "insert" or not lines:
            lines.insert(i, draw(st.sampled_from(EXTRA_LINES)))
        elif op == "delete":
            del lines[i]
        elif op == "replace":
            lines[i] = draw(st.sampled_from(EXTRA_LINES))
        elif op == "token":
            words = lines[i].split(" ")
            j = draw(st.integers(0, len(words) - 1))
            words[j] = draw(st.one_of(st.sampled_from(TOKENS), st.text(max_size=8)))
            lines[i] = " ".join(words)
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        else:
            lines.insert(i, lines[i])
    if draw(st.integers(0, 3)) == 0:
        # Another line ending here and there (CR alone, VT, NEL, LS...).
        seps = [draw(st.sampled_from(NEWLINES)) for _ in lines]
        return "".join(line + sep for line, sep in zip(lines, seps, strict=True))
    return draw(st.sampled_from(["\r\n", "\n"])).join(lines) + "\r\n"


@pytest.fixture(scope="module")
def state() -> WorkerContext:
    settings = load_settings(None, {"worker": {"token": "fuzz-token-fuzz-token"}})
    return WorkerContext(settings, {}, "w-fuzz")


@pytest.fixture(scope="module", autouse=True)
def no_traffic() -> Iterator[None]:
    confine_to_loopback()

    async def no_mdns(*args: Any, **kwargs: Any) -> Any:
        raise OSError("mDNS is disabled in the fuzz tests")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(aioice.mdns, "create_mdns_protocol", no_mdns)
        yield


bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: dumps(v).encode()),
    st.builds(
        lambda sdp, kind, extra: dumps({"sdp": sdp, "type": kind, **extra}).encode(),
        st.one_of(offers(), st.text(max_size=50)),
        st.sampled_from(["offer", "offer", "answer", "pranswer", "", "OFFER"]),
        st.dictionaries(
            st.sampled_from(["stream_id", "frame_ticks", "x"]), json_values, max_size=2
        ),
    ),
)


@FUZZ
@given(body=bodies)
@counted
def test_parse_offer_returns_the_offer_or_a_reasoned_400(state: WorkerContext, body: bytes) -> None:
    with within(f"parse_offer({short(body)})"):
        result = parse_offer(body, state)
    if isinstance(result, JSONResponse):
        assert result.status_code == 400
        reason = json.loads(bytes(result.body))["error"]
        assert reason.startswith(("bad offer: ", "offer of ")) and len(reason) > 12, reason
    else:
        assert isinstance(result, OfferRequest) and result.type == "offer"
        assert check_sdp(result.sdp) is None


def _aiortc_media(sdp: str) -> Counter[str] | None:
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception:  # aiortc refuses it: nothing it would set up
        return None
    return Counter(m.kind for m in parsed.media)


@FUZZ
@given(sdp=offers())
@counted
def test_what_check_sdp_passes_is_one_video_to_aiortc(sdp: str) -> None:
    if check_sdp(sdp) is not None:
        return
    media = _aiortc_media(sdp)
    if media is None or _other_line_endings(sdp):
        return  # line endings other than \n: test_check_sdp_sees_sections_after_a_bare_cr
    assert (
        media["video"] == 1 and media["application"] <= 1 and set(media) <= {"video", "application"}
    ), f"check_sdp passed {short(sdp)} but aiortc sees {dict(media)}"


def _other_line_endings(sdp: str) -> bool:
    return len(sdp.splitlines()) != len(sdp.replace("\r\n", "\n").split("\n")) - (
        1 if sdp.endswith(("\n", "\r\n")) else 0
    )


@FUZZ
@given(sdp=offers(), loopback_only=st.booleans())
@counted
def test_the_candidates_aiortc_takes_are_the_ones_the_filter_kept(
    sdp: str, loopback_only: bool
) -> None:
    with within(f"filter_sdp_candidates({short(sdp)})"):
        kept = filter_sdp_candidates(sdp, loopback_only)
    try:
        parsed = SessionDescription.parse(kept)
    except Exception:
        return
    for media in parsed.media:
        for c in media.ice_candidates:
            if _leading_blank_candidate(kept, c.ip):
                continue  # test_a_candidate_with_a_blank_after_the_colon_is_filtered
            assert not c.ip.lower().rstrip(".").endswith(".local"), f"mDNS kept: {c.ip}"
            if loopback_only:
                assert _is_loopback(c.ip), f"non-loopback candidate kept: {c.ip}"


def _leading_blank_candidate(sdp: str, ip: str) -> bool:
    return any(
        line.startswith(("a=candidate: ", "a=candidate:\t")) and ip in line
        for line in sdp.splitlines()
    )


def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


async def _take_offer(sdp: str) -> None:
    # What the /offer route does up to the answer; setLocalDescription would start ICE.
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("video", direction="recvonly")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        await pc.createAnswer()
    finally:
        await asyncio.wait_for(pc.close(), 5)


@FUZZ
@given(sdp=offers())
@counted
def test_aiortc_answers_or_raises_on_any_offer_that_passes(sdp: str) -> None:
    if check_sdp(sdp) is not None:
        return
    sdp = filter_sdp_candidates(sdp, loopback_only=True)
    with within(f"setRemoteDescription({short(sdp)})"):
        try:
            asyncio.run(asyncio.wait_for(_take_offer(sdp), 8))
            OBSERVED["sdp: aiortc answered an offer"] += 1
        except TimeoutError:
            raise AssertionError(f"aiortc hung on {short(sdp)}") from None
        except Exception as exc:  # the route answers 400 "SDP rejected: <exc>"
            OBSERVED[f"sdp: aiortc rejected an offer: {type(exc).__name__}"] += 1
            if str(exc).strip() == "" and isinstance(exc, AssertionError):
                return  # test_an_sdp_rejection_names_the_problem
            assert str(exc).strip(), f"{type(exc).__name__} without a message on {short(sdp)}"


# -- found by the targets above (the owner fixes them) -------------------------------------------


def test_check_sdp_sees_sections_after_a_bare_cr() -> None:
    sdp = OFFER.replace("\nm=application", "\rm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nm=application")
    media = _aiortc_media(sdp)
    assert media is not None and media["audio"] == 1  # aiortc sees the audio section
    assert check_sdp(sdp) is not None, "check_sdp passed an offer with audio"


def test_check_view_sdp_sees_sections_after_a_bare_cr() -> None:
    viewer = OFFER.replace("a=sendonly", "a=recvonly")
    sdp = viewer.replace(
        "\nm=application", "\rm=video 9 UDP/TLS/RTP/SAVPF 96\ra=sendrecv\r\nm=application"
    )
    media = _aiortc_media(sdp)
    assert media is not None and media["video"] == 2
    assert check_view_sdp(sdp) is not None, "check_view_sdp passed a sendrecv video"


def test_a_candidate_with_a_blank_after_the_colon_is_filtered() -> None:
    line = "a=candidate: 1 1 udp 1 abcd.local 9 typ host"
    sdp = OFFER.replace("a=end-of-candidates", line + "\r\na=end-of-candidates", 1)
    kept = filter_sdp_candidates(sdp, loopback_only=False)
    ips = [c.ip for m in SessionDescription.parse(kept).media for c in m.ice_candidates]
    assert "abcd.local" not in ips


def test_an_sdp_rejection_names_the_problem() -> None:
    # aiortc's parser checks with bare asserts (an empty message): the refusal still says so.
    sdp = OFFER.replace("m=video 45024 UDP/TLS/RTP/SAVPF 97 98 99 100", "m=video 9 X 300")
    with pytest.raises(Exception) as info:
        asyncio.run(_take_offer(sdp))
    said = sdp_rejection(info.value)
    assert "aiortc could not parse it" in said and type(info.value).__name__ in said
