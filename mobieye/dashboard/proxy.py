"""Live video through the dashboard: pages talk to their own origin only (no CORS, one token),
and these routes forward to workers: a stream's viewers (``POST /view``, ``GET
/streams/{id}/mjpeg``) and a phone's camera stream (``POST /offer`` of the least loaded one)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from mobieye.dashboard.api import Store
from mobieye.dashboard.store import FleetStore
from mobieye.dashboard.views import WorkerView

log = logging.getLogger(__name__)

MAX_OFFER_BYTES = 64 * 1024  # an SDP offer is a few KiB
VIEW_TIMEOUT_S = 10.0


def worker_url(fleet: FleetStore, stream_id: str) -> str | None:
    """The base URL of the worker serving ``stream_id``, if both are known."""
    stream = fleet.stream(stream_id)
    if stream is None:
        return None
    for worker in fleet.workers():
        if worker.id == stream.worker and worker.status == "online" and worker.url:
            return worker.url.rstrip("/")
    return None


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
async def view(stream_id: str, request: Request, fleet: Store) -> Response:
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
        async with httpx.AsyncClient(trust_env=False, timeout=VIEW_TIMEOUT_S) as client:
            r = await client.post(base + "/view", json=payload)
    except httpx.HTTPError as exc:
        return _error(502, f"worker at {base} unreachable: {exc!r}")
    return Response(r.content, status_code=r.status_code, media_type="application/json")


@router.post("/api/phone/offer")
async def phone_offer(request: Request, fleet: Store) -> Response:
    """A browser camera's offer (send video, a data channel for results) to the least
    loaded live worker with room; the next one is tried when a worker refuses (503)."""
    offer = _offer(await request.body())
    if isinstance(offer, JSONResponse):
        return offer
    sdp, kind = offer
    refusals: list[str] = []
    async with httpx.AsyncClient(trust_env=False, timeout=VIEW_TIMEOUT_S) as client:
        for worker in phone_candidates(fleet):
            base = str(worker.url).rstrip("/")
            try:
                r = await client.post(base + "/offer", json={"sdp": sdp, "type": kind})
            except httpx.HTTPError as exc:
                refusals.append(f"{worker.id}: unreachable ({exc!r})")
                continue
            if r.status_code == 503:
                refusals.append(f"{worker.id}: {r.text}")
                continue
            return Response(r.content, r.status_code, media_type="application/json")
    why = "; ".join(refusals) or "no live worker with room is known"
    return _error(503, f"no worker took the stream: {why}")


@router.get("/api/streams/{stream_id}/mjpeg", response_model=None)
async def mjpeg(stream_id: str, fleet: Store) -> Response:
    """The worker's MJPEG fallback (boxes drawn by the worker), streamed through."""
    base = worker_url(fleet, stream_id)
    if base is None:
        return _error(404, f"no live worker known for stream {stream_id!r}")
    client = httpx.AsyncClient(trust_env=False, timeout=httpx.Timeout(10.0, read=None))
    try:
        upstream = await client.send(
            client.build_request("GET", f"{base}/streams/{stream_id}/mjpeg"), stream=True
        )
    except httpx.HTTPError as exc:
        await client.aclose()
        return _error(502, f"worker at {base} unreachable: {exc!r}")
    if upstream.status_code != 200:
        content = await upstream.aread()
        await upstream.aclose()
        await client.aclose()
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
