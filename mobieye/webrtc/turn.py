"""TURN for peers behind NAT: time-limited credentials and a check that a server really relays.

Credentials follow coturn's shared-secret REST scheme (``use-auth-secret``): the username is
``<expiry unix time>:<user>`` and the password ``base64(HMAC-SHA1(secret, username))``, so a
worker or the dashboard that knows the secret mints credentials that expire, and no page or edge
ever holds a static password. aiortc uses only the first TURN URL it is given and drops a
failing allocation without a word, so before connecting the edge asks each TURN server for an
allocation itself (:func:`probe_turn`): a wrong secret or an unreachable server is said in
words naming the server and the step that failed, and the next server is used instead.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aioice.stun
import aioice.turn
from aiortc.rtcicetransport import parse_stun_turn_uri

from mobieye.webrtc.ice import IceServerLike, IceServerSpec

if TYPE_CHECKING:
    from mobieye.config import WebRTCConfig

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class TurnCredential:
    username: str
    credential: str
    expires: int  # unix time


def mint_credential(
    secret: str, ttl_s: float, user: str, now: float | None = None
) -> TurnCredential:
    """coturn REST-API credentials valid for ``ttl_s`` seconds from ``now``."""
    expires = int((time.time() if now is None else now) + ttl_s)
    username = f"{expires}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return TurnCredential(username, base64.b64encode(digest).decode(), expires)


def turn_servers(
    urls: Sequence[str], secret: str, ttl_s: float, user: str, now: float | None = None
) -> list[IceServerSpec]:
    """One ICE server entry per TURN URL (aiortc takes one TURN URL per entry), each with
    freshly minted credentials."""
    cred = mint_credential(secret, ttl_s, user, now)
    return [IceServerSpec((url,), cred.username, cred.credential) for url in urls]


def own_servers(webrtc: WebRTCConfig, now: float | None = None) -> list[IceServerSpec]:
    """This process's ICE servers: the configured ones, then the TURN URLs with credentials
    minted from ``webrtc.turn.secret`` (without the secret: none, the edge asks its worker)."""
    static = [IceServerSpec(tuple(s.urls), s.username, s.credential) for s in webrtc.ice_servers]
    t = webrtc.turn
    if not t.urls or not t.secret:
        return static
    return static + turn_servers(t.urls, t.secret, t.ttl_s, t.user, now)


def servers_json(webrtc: WebRTCConfig) -> list[dict[str, object]]:
    """:func:`own_servers` as a page or an edge takes them (RTCPeerConnection's iceServers)."""
    return [
        {"urls": list(s.urls), "username": s.username, "credential": s.credential}
        for s in own_servers(webrtc)
    ]


def _is_turn(url: str) -> bool:
    return url.startswith(("turn:", "turns:"))


async def probe_turn(url: str, username: str | None, credential: str | None,
                     timeout_s: float = PROBE_TIMEOUT_S) -> str | None:  # fmt: skip
    """Ask the TURN server at ``url`` for an allocation; None when it relays, else what failed
    (naming the server and the step)."""
    try:
        parsed = parse_stun_turn_uri(url)
    except ValueError as exc:
        return f"TURN server {url!r}: not a TURN URL ({exc})"
    server = (parsed["host"], parsed["port"])
    transport = parsed["transport"] or "udp"
    where = f"TURN server {parsed['host']}:{parsed['port']} over {transport}"
    if not username or not credential:
        return f"{where}: no credentials (set webrtc.turn.secret, or get them from the worker)"
    try:
        turn, _ = await asyncio.wait_for(
            aioice.turn.create_turn_endpoint(
                asyncio.DatagramProtocol, server, username, credential,
                ssl=parsed["scheme"] == "turns", transport=transport,
            ),
            timeout_s,
        )  # fmt: skip
    except TimeoutError:
        return f"{where}: unreachable: no answer to the allocation within {timeout_s:.0f} s"
    except aioice.stun.TransactionFailed as exc:
        code = exc.response.attributes.get("ERROR-CODE", (0, ""))
        hint = " (wrong credentials, or a secret that differs from the server's)" if code[
            0
        ] in (401, 403, 441) else ""  # fmt: skip
        return f"{where}: allocation refused: {code[0]} {code[1]}{hint}"
    except aioice.stun.TransactionTimeout:
        return f"{where}: unreachable: the allocation timed out"
    except OSError as exc:
        return f"{where}: unreachable: {exc.strerror or exc}"
    except Exception as exc:  # aioice raises ConnectionError and others on odd answers
        return f"{where}: allocation failed: {exc!r}"
    turn.close()
    return None


async def usable_ice_servers(
    servers: Sequence[IceServerLike], timeout_s: float = PROBE_TIMEOUT_S
) -> tuple[list[IceServerSpec], list[str]]:
    """The servers to give aiortc: every STUN URL, then the TURN URLs that allocate, in their
    order (aiortc uses the first); and the problems of those that don't. Probes run at once."""
    stun: list[IceServerSpec] = []
    turn: list[IceServerSpec] = []
    for s in servers:
        for url in s.urls:
            spec = IceServerSpec((url,), s.username, s.credential)
            (turn if _is_turn(url) else stun).append(spec)
    problems = await asyncio.gather(
        *(probe_turn(t.urls[0], t.username, t.credential, timeout_s) for t in turn)
    )
    working = [t for t, p in zip(turn, problems, strict=True) if p is None]
    failed = [p for p in problems if p is not None]
    for problem in failed:
        log.warning("%s", problem)
    return stun + working, failed
