"""Live video through the dashboard: pages talk to their own origin only (no CORS, one token),
and these routes forward to workers: a stream's viewers (``POST /view``, ``GET
/streams/{id}/mjpeg``) and a phone's camera stream (``POST /offer`` of the least loaded one)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated

import httpx
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from mobieye.config import WebRTCConfig
from mobieye.dashboard.api import Store
from mobieye.dashboard.auth import PhoneGrants
from mobieye.dashboard.store import FleetStore
from mobieye.dashboard.views import WorkerView
from mobieye.fleet.access import WorkerAccess, WorkerNotTrusted
from mobieye.webrtc.turn import servers_json

log = logging.getLogger(__name__)

MAX_OFFER_BYTES = 64 * 1024  # an SDP offer is a few KiB
MAX_ANSWER_BYTES = 256 * 1024  # nor may a worker make the dashboard buffer more than this
VIEW_TIMEOUT_S = 10.0


def _access(request: Request) -> WorkerAccess:
    access: WorkerAccess = request.app.state.access
    return access


Access = Annotated[WorkerAccess, Depends(_access)]


def worker_url(fleet: FleetStore, stream_id: str) -> str | None:
    """The base URL of the worker serving ``stream_id``, if both are known (and trusted: the
    store keeps no worker whose URL fleet.allowed_worker_urls refuses; checked again here)."""
    stream = fleet.stream(stream_id)
    if stream is None:
        return None
    for worker in fleet.workers():
        if worker.id == stream.worker and worker.status == "online" and worker.url:
            if not fleet.allowlist.allows(worker.url):
                return None
            return worker.url.rstrip("/")
    return None


async def _read_capped(r: httpx.Response) -> bytes | None:
    """A worker's answer, or None past MAX_ANSWER_BYTES (read no further) or VIEW_TIMEOUT_S."""
    body = bytearray()
    try:
        async with asyncio.timeout(VIEW_TIMEOUT_S):
            async for chunk in r.aiter_bytes():
                body += chunk
                if len(body) > MAX_ANSWER_BYTES:
                    return None
    except TimeoutError:
        return None
    return bytes(body)


async def _post(
    client: httpx.AsyncClient, access: WorkerAccess, url: str, payload: dict[str, str]
) -> Response:
    """POST to a worker; its answer read with a cap, from the pinned certificate only."""
    async with client.stream("POST", url, json=payload) as r:
        access.check(r)
        body = await _read_capped(r)
    if body is None:
        return _error(502, f"worker at {url} answered over {MAX_ANSWER_BYTES} bytes or too slowly")
    return Response(body, status_code=r.status_code, media_type="application/json")


def phone_candidates(fleet: FleetStore) -> list[WorkerView]:
    """Live workers with room for one more stream, the least loaded first."""
    live = [w for w in fleet.workers() if w.has_room and not w.stale and w.url]
    return sorted(live, key=lambda w: (w.load, w.streams / max(1, w.capacity), w.id))


def _offer(body: bytes) -> tuple[str, str] | JSONResponse:
    """The ``{sdp, type}`` in a page's request, or the refusal."""
    if len(body) > MAX_OFFER_BYTES:
        return _error(413, f"offer over {MAX_OFFER_BYTES} bytes")
    try:
        offer = json.loads(body)
        return str(offer["sdp"]), str(offer["type"])
    except (ValueError, KeyError, TypeError):
        return _error(422, "the body must be JSON {sdp, type}")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "problems": []}, status_code=status)


router = APIRouter()


@router.post("/api/streams/{stream_id}/view")
async def view(stream_id: str, request: Request, fleet: Store, access: Access) -> Response:
    """Forward a receive-only WebRTC offer ``{sdp, type}`` to the stream's worker."""
    offer = _offer(await request.body())
    if isinstance(offer, JSONResponse):
        return offer
    sdp, kind = offer
    base = worker_url(fleet, stream_id)
    if base is None:
        return _error(404, f"no live worker known for stream {stream_id!r}")
    payload = {"sdp": sdp, "type": kind, "stream_id": stream_id}
    try:
        async with access.client(VIEW_TIMEOUT_S) as client:
            return await _post(client, access, base + "/view", payload)
    except WorkerNotTrusted as exc:
        return _error(502, str(exc))
    except httpx.HTTPError as exc:
        return _error(502, f"worker at {base} unreachable: {exc!r}")


@router.post("/api/phone/offer")
async def phone_offer(request: Request, fleet: Store, access: Access) -> Response:
    """A browser camera's offer (send video, a data channel for results) to the least
    loaded live worker with room; the next one is tried when a worker refuses (503)."""
    offer = _offer(await request.body())
    if isinstance(offer, JSONResponse):
        return offer
    sdp, kind = offer
    refusals: list[str] = []
    async with access.client(VIEW_TIMEOUT_S) as client:
        for worker in phone_candidates(fleet):
            base = str(worker.url).rstrip("/")
            try:
                r = await _post(client, access, base + "/offer", {"sdp": sdp, "type": kind})
            except (httpx.HTTPError, WorkerNotTrusted) as exc:
                refusals.append(f"{worker.id}: unreachable ({exc!r})")
                continue
            if r.status_code in (502, 503):
                refusals.append(f"{worker.id}: {bytes(r.body)[:300].decode(errors='replace')}")
                continue
            return r
    why = "; ".join(refusals) or "no live worker with room is known"
    return _error(503, f"no worker took the stream: {why}")


@router.get("/api/ice-servers")
async def ice_servers(request: Request) -> JSONResponse:
    """STUN/TURN servers for a page's peer connection (a viewer's, a phone's): TURN
    credentials minted here from webrtc.turn.secret, valid for webrtc.turn.ttl_s; a page never
    holds a static password. A phone's grant opens this route too (it doesn't use it up)."""
    webrtc: WebRTCConfig = request.app.state.webrtc
    return JSONResponse(
        {"ice_servers": servers_json(webrtc), "ice_transport_policy": webrtc.ice_transport_policy},
        headers={"cache-control": "no-store"},
    )


@router.post("/api/phone/grants")
async def phone_grant(request: Request) -> JSONResponse:
    """A link for a phone to stream its camera once, within the next ten minutes, without the
    dashboard's token: open the returned ``path`` on the phone (over HTTPS)."""
    grants: PhoneGrants = request.app.state.grants
    grant = grants.create()
    return JSONResponse(
        {"path": f"/phone?grant={grant}", "expires_in_s": int(grants.ttl_s)},
        headers={"cache-control": "no-store"},
    )


@router.get("/api/streams/{stream_id}/mjpeg", response_model=None)
async def mjpeg(stream_id: str, fleet: Store, access: Access) -> Response:
    """The worker's MJPEG fallback (boxes drawn by the worker), streamed through."""
    base = worker_url(fleet, stream_id)
    if base is None:
        return _error(404, f"no live worker known for stream {stream_id!r}")
    client = access.client(httpx.Timeout(10.0, read=None))
    try:
        upstream = await client.send(
            client.build_request("GET", f"{base}/streams/{stream_id}/mjpeg"), stream=True
        )
        access.check(upstream)
    except (httpx.HTTPError, WorkerNotTrusted) as exc:
        await client.aclose()
        return _error(502, f"worker at {base} unreachable or untrusted: {exc!r}")
    if upstream.status_code != 200:  # a refusal: read capped, never the whole of it
        content = await _read_capped(upstream)
        await upstream.aclose()
        await client.aclose()
        if content is None:
            return _error(502, f"worker at {base} refused with an answer over "
                          f"{MAX_ANSWER_BYTES} bytes or too slowly")  # fmt: skip
        return Response(content, upstream.status_code, media_type="application/json")

    async def relay() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.aiter_raw():
                yield chunk
        finally:  # the browser left (or the stream ended): let the worker's viewer go
            await upstream.aclose()
            await client.aclose()

    media = upstream.headers.get("content-type", "multipart/x-mixed-replace")
    return StreamingResponse(relay(), media_type=media, headers={"cache-control": "no-store"})
