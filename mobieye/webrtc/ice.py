"""ICE confinement and configuration.

aioice gathers host candidates from every non-loopback interface, and aiortc adds a public STUN
server when no ICE servers are given. Deployments choose their servers explicitly; tests and
sandboxes must keep all traffic on loopback.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer, RTCIceTransportPolicy, RTCPeerConnection
from aiortc.rtcicetransport import RTCIceGatherer

logger = logging.getLogger(__name__)

LOOPBACK_ADDRESSES: tuple[str, ...] = ("127.0.0.1",)

_confined = False


class IceServerLike(Protocol):
    """Anything shaped like an ICE server entry (IceServerSpec, a settings model, ...)."""

    @property
    def urls(self) -> Sequence[str]: ...
    @property
    def username(self) -> str | None: ...
    @property
    def credential(self) -> str | None: ...


@dataclass(frozen=True)
class IceServerSpec:
    """One STUN/TURN server, as read from configuration."""

    urls: Sequence[str] = field(default_factory=tuple)
    username: str | None = None
    credential: str | None = None


def _loopback_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    # Same signature as aioice.ice.get_host_addresses; IPv6 is dropped on purpose: ::1 would
    # double the candidate pairs for no benefit on a single host.
    return list(LOOPBACK_ADDRESSES) if use_ipv4 else []


def _no_default_ice_servers(cls: type[RTCIceGatherer]) -> list[RTCIceServer]:
    return []


def confine_to_loopback() -> None:
    """Make every ICE agent in this process gather only 127.0.0.1 host candidates.

    Must run before any RTCPeerConnection gathers. Idempotent. It also removes aiortc's implicit
    public STUN server, so a peer connection built without a configuration cannot leak either.
    """
    global _confined
    aioice.ice.get_host_addresses = _loopback_host_addresses
    # aiortc falls back to stun.l.google.com when iceServers is None.
    setattr(RTCIceGatherer, "getDefaultIceServers", classmethod(_no_default_ice_servers))  # noqa: B010
    if not _confined:
        _confined = True
        logger.info("ICE confined to loopback (%s), no default STUN", ", ".join(LOOPBACK_ADDRESSES))


def is_confined_to_loopback() -> bool:
    return aioice.ice.get_host_addresses is _loopback_host_addresses


def rtc_configuration(
    ice_servers: Sequence[IceServerLike] | None, policy: str = "all"
) -> RTCConfiguration:
    """Build an RTCConfiguration whose iceServers is always an explicit list.

    None means "no servers" here, unlike aiortc, where None means "use Google's STUN server".
    ``policy`` "relay": only TURN-relayed candidates (webrtc.ice_transport_policy).
    """
    servers = [
        RTCIceServer(urls=list(spec.urls), username=spec.username, credential=spec.credential)
        for spec in ice_servers or ()
    ]
    transport = RTCIceTransportPolicy.RELAY if policy == "relay" else RTCIceTransportPolicy.ALL
    return RTCConfiguration(iceServers=servers, iceTransportPolicy=transport)


def selected_pair(pc: RTCPeerConnection) -> dict[str, str] | None:
    """The candidate pair ICE nominated for ``pc`` (which path carries the stream: host,
    srflx, prflx or relay on each side), or None before ICE has chosen one."""
    transports = [t.sender.transport or t.receiver.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        transports.append(pc.sctp.transport)
    for dtls in transports:
        connection = getattr(getattr(dtls, "transport", None), "_connection", None)
        nominated = getattr(connection, "_nominated", None) or {}
        pair = nominated.get(1)
        if pair is not None:
            local, remote = pair.local_candidate, pair.remote_candidate
            return {
                "local": str(local.type),
                "remote": str(remote.type),
                "local_address": f"{local.host}:{local.port}",
                "remote_address": f"{remote.host}:{remote.port}",
            }
    return None


def _candidate_address(line: str) -> str | None:
    # a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type> ...
    # The value's words, as aiortc reads them (a blank after the colon shifts nothing).
    parts = line.strip().removeprefix("a=candidate:").split()
    return parts[4] if len(parts) >= 7 else None


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False  # a hostname: not resolvable to loopback without a lookup


def filter_sdp_candidates(sdp: str, loopback_only: bool) -> str:
    """Drop ICE candidate lines that cannot or must not be used.

    mDNS (``*.local``) candidates are always dropped: resolving them needs multicast DNS, which
    is not available here. With ``loopback_only``, every candidate whose address is not a loopback
    IP is dropped too. Other lines, and the original line endings, are kept.
    """
    kept: list[str] = []
    for line in sdp.splitlines(keepends=True):
        if line.startswith("a=candidate:"):
            address = _candidate_address(line)
            if address is None or address.lower().rstrip(".").endswith(".local"):
                continue
            if loopback_only and not _is_loopback(address):
                continue
        kept.append(line)
    return "".join(kept)
