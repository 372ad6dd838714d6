"""Which STUN/TURN servers the edge gives a new connection.

The configured servers, plus the TURN relays of ``webrtc.turn``: with its secret the edge mints
its own credentials; without, it asks the worker it is about to signal (``GET /ice-servers``,
with the worker token) for credentials minted there. Every TURN server is asked for an
allocation before it is used (aiortc uses only the first TURN URL and drops one that fails in
silence): one that is unreachable or refuses the credentials is named with the failing step,
and the next one is used; with none left the stream goes without a relay (and, where direct
paths are blocked, the on-device boxes cover it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mobieye.config import IceServer, Settings
from mobieye.errors import MobiEyeError
from mobieye.fleet.access import WorkerAccess
from mobieye.webrtc.ice import IceServerSpec
from mobieye.webrtc.turn import own_servers, usable_ice_servers

log = logging.getLogger(__name__)

PROBED_KEEP_S = 60.0  # a probe's verdict is reused this long (a failover must not wait)
MAX_SERVER_BYTES = 16 * 1024
FETCH_S = 5.0


class IceServersAnswer(BaseModel):
    """A worker's ``GET /ice-servers``: at most 8 servers, each with at most 4 URLs."""

    model_config = ConfigDict(extra="ignore")

    ice_servers: list[IceServer] = Field(max_length=8)
    ttl_s: float | None = None


@dataclass
class EdgeIce:
    settings: Settings
    problems: list[str] = field(default_factory=list)  # each said once, for the report
    _cache: dict[str, tuple[float, list[IceServerSpec]]] = field(default_factory=dict)

    async def servers_for(self, worker_url: str) -> list[IceServerSpec]:
        """The ICE servers for a connection to the worker at ``worker_url``."""
        w = self.settings.webrtc
        if not w.turn.urls and not any(_has_turn(s.urls) for s in w.ice_servers):
            return own_servers(w)  # STUN or nothing: nothing to probe
        key = worker_url if w.turn.urls and not w.turn.secret else ""
        cached = self._cache.get(key)
        if cached is not None and time.monotonic() - cached[0] < PROBED_KEEP_S:
            return cached[1]
        servers = own_servers(w)
        if w.turn.urls and not w.turn.secret:
            servers += await self._from_worker(worker_url)
        usable, problems = await usable_ice_servers(servers)
        for problem in problems:
            if problem not in self.problems:
                self.problems.append(problem)
        if problems and not any(_has_turn(s.urls) for s in usable):
            log.error("no TURN server relays for this edge (%s): the stream goes without a "
                      "relay", "; ".join(problems))  # fmt: skip
        self._cache[key] = (time.monotonic(), usable)
        return usable

    async def _from_worker(self, worker_url: str) -> list[IceServerSpec]:
        endpoint = worker_url.rstrip("/") + "/ice-servers"
        access = WorkerAccess.from_settings(self.settings)
        try:
            # Streamed with a cap and a deadline: a hostile or stalled worker costs this
            # attempt at most FETCH_S and MAX_SERVER_BYTES.
            async with (
                asyncio.timeout(FETCH_S),
                access.client(FETCH_S) as client,
                client.stream("GET", endpoint) as response,
            ):
                access.check(response)
                body = b""
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_SERVER_BYTES:
                        raise ValueError(f"answer over {MAX_SERVER_BYTES} bytes")
            if response.status_code != 200:
                raise ValueError(f"HTTP {response.status_code}: {body[:200]!r}")
            answer = IceServersAnswer.model_validate_json(body)
        except (httpx.HTTPError, ValueError, ValidationError, MobiEyeError, TimeoutError) as exc:
            problem = (f"TURN credentials from worker {endpoint}: {str(exc)[:200]} (set "
                       "webrtc.turn.secret on the edge, or check the worker's)")  # fmt: skip
            if problem not in self.problems:
                self.problems.append(problem)
            log.warning("%s", problem)
            return []
        given = [
            IceServerSpec((url,), s.username, s.credential)
            for s in answer.ice_servers
            for url in s.urls[:4]
            if url.startswith(("turn:", "turns:"))
        ]
        if not given:
            return []
        # The edge's own TURN URLs first (its view of the relay: TCP where its network passes
        # no UDP), with the worker's credentials (one secret per relay service); then the
        # worker's own URLs.
        cred = given[0]
        own = [IceServerSpec((url,), cred.username, cred.credential)
               for url in self.settings.webrtc.turn.urls]  # fmt: skip
        return own + [g for g in given if g.urls[0] not in self.settings.webrtc.turn.urls]


def _has_turn(urls: Sequence[str]) -> bool:
    return any(u.startswith(("turn:", "turns:")) for u in urls)
