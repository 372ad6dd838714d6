"""The worker's HTTP routes: signalling (``POST /offer``), health, metrics, the stream list and
the viewers' routes. Each reaches the worker's state through ``request.app.state.worker``."""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Annotated

from aiortc import RTCPeerConnection, RTCSessionDescription
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cloud_worker.context import WorkerContext
from cloud_worker.offers import read_offer, refuse, sdp_rejection
from cloud_worker.session import StreamSession
from cloud_worker.viewers import check_view_sdp
from mobieye.clock import FrameClock
from mobieye.webrtc import filter_sdp_candidates, rtc_configuration
from mobieye.webrtc.turn import own_servers, servers_json

log = logging.getLogger(__name__)


def _context(request: Request) -> WorkerContext:
    state: WorkerContext = request.app.state.worker
    return state


Worker = Annotated[WorkerContext, Depends(_context)]
router = APIRouter()


@router.get("/healthz")
async def healthz(state: Worker) -> JSONResponse:
    body = {
        "worker_id": state.worker_id,
        "models": state.model_labels(),
        "model_sha256": state.model_hashes(),
        "streams": len(state.sessions),
        "max_streams": state.admits(),
    }
    if state.load is not None:
        load = state.load
        body["capacity"] = {
            **asdict(load.capacity()),
            "admits_by": load.basis,
            "keyframe_stretch": load.stretch,
            "cpu_utilisation": round(load.utilisation, 3),
        }
    if state.load_error:
        return JSONResponse({**body, "status": "failed", "error": state.load_error}, 503)
    if not state.ready:
        return JSONResponse({**body, "status": "loading"}, 503)
    problem = state.detector_problem()
    if problem:
        return JSONResponse({**body, "status": "failing", "error": problem}, 503)
    if state.draining:  # serving its streams until they move, admitting none: not ready
        return JSONResponse({**body, "status": "draining"}, 503)
    return JSONResponse({**body, "status": "ok"})


@router.get("/livez")
async def livez(state: Worker) -> JSONResponse:
    """Liveness: 503 only when restarting the process could help (the model failed to load,
    the detector can't detect). Loading and draining are alive (``/healthz`` says ready)."""
    problem = state.load_error or state.detector_problem()
    if problem:
        return JSONResponse({"status": "failing", "error": problem}, 503)
    return JSONResponse({"status": "draining" if state.draining else "alive"})


@router.get("/ice-servers")
async def ice_servers(state: Worker) -> JSONResponse:
    """STUN/TURN servers for an edge about to offer (token required, like every route but the
    health checks): TURN credentials minted here from webrtc.turn.secret, valid for
    webrtc.turn.ttl_s, so edges never hold the secret or a static password."""
    w = state.settings.webrtc
    ttl = w.turn.ttl_s if w.turn.secret else None
    return JSONResponse({"ice_servers": servers_json(w), "ttl_s": ttl},
                        headers={"cache-control": "no-store"})  # fmt: skip


@router.get("/streams")
async def streams(state: Worker) -> JSONResponse:
    """Active streams and the last finished ones, with their counters."""
    return JSONResponse(
        {
            "active": [s.summary() for s in state.sessions.values()],
            "recent": list(state.recent),
        }
    )


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(state: Worker) -> Response:
    state.metrics.streams.set(len(state.sessions))
    return PlainTextResponse(
        generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )


@router.get("/viewers")
async def viewers(state: Worker) -> JSONResponse:
    return JSONResponse(state.viewers.summary())


@router.post("/view")
async def view(request: Request, state: Worker) -> JSONResponse:
    """A viewer's offer (receive-only video and a data channel it creates) for a stream."""
    req = await read_offer(request, state, "view_")
    if isinstance(req, JSONResponse):
        return req
    problem = (
        "stream_id: the stream to watch is required"
        if req.stream_id is None
        else check_view_sdp(req.sdp)
    )
    if problem:
        return refuse(400, f"bad offer: {problem}", state, "view_malformed")
    session = state.sessions.get(req.stream_id or "")
    if session is None:
        return refuse(404, f"no active stream {req.stream_id!r}", state, "view_unknown")
    full = state.viewers.refusal(session)
    if full:
        return refuse(503, full, state, "view_capacity")
    try:
        answer = await state.viewers.open_webrtc(session, req.sdp)
    except Exception as exc:  # aiortc raises assorted errors on bad SDP
        return refuse(400, f"bad offer: SDP rejected: {sdp_rejection(exc)}", state, "view_sdp")
    return JSONResponse({"sdp": answer.sdp, "type": answer.type, "stream_id": req.stream_id})


@router.get("/streams/{stream_id}/mjpeg", response_model=None)
async def mjpeg(stream_id: str, state: Worker) -> Response:
    """The stream's frames with their boxes drawn, as MJPEG: when WebRTC can't connect."""
    session = state.sessions.get(stream_id)
    if session is None:
        return JSONResponse({"error": f"no active stream {stream_id!r}"}, 404)
    full = state.viewers.refusal(session)
    if full:
        return JSONResponse({"error": full}, 503)
    return state.viewers.open_mjpeg(session)


@router.post("/offer")
async def offer(request: Request, state: Worker) -> JSONResponse:
    settings = state.settings
    req = await read_offer(request, state)
    if isinstance(req, JSONResponse):
        return req
    if state.pool is None:
        return refuse(
            503, state.load_error or "worker is still loading its model", state, "not_ready"
        )
    problem = state.detector_problem()
    if problem:
        return refuse(503, f"worker cannot detect: {problem}", state, "failing")
    if state.draining:
        return refuse(503, "worker is draining (shutting down): try another worker", state,
                      "draining")  # fmt: skip
    admits = state.admits()
    if len(state.sessions) >= admits:
        basis = state.load.basis if state.load is not None else "fixed"
        return refuse(
            503,
            f"worker at capacity ({admits} streams, {basis}): try another worker",
            state,
            "capacity",
        )

    sdp = filter_sdp_candidates(req.sdp, settings.webrtc.loopback_only)
    pc = RTCPeerConnection(
        rtc_configuration(own_servers(settings.webrtc), settings.webrtc.ice_transport_policy)
    )
    stream_id = state.new_stream_id(req.stream_id)
    session = StreamSession(
        stream_id,
        pc,
        settings,
        state.pool,
        state.metrics,
        state.worker_id,
        on_closed=state.forget,
        clock=FrameClock(req.frame_ticks) if req.frame_ticks else None,
        uplink=req.uplink,
    )
    state.sessions[stream_id] = session
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)
    except Exception as exc:  # aiortc raises assorted errors on bad SDP
        await session.close()
        return refuse(400, f"bad offer: SDP rejected: {sdp_rejection(exc)}", state, "sdp")
    log.info("stream %s: %s offer accepted (%d active)", stream_id, req.uplink,
             len(state.sessions))  # fmt: skip
    if state.fleet is not None:
        state.fleet.stream_started(session)
    local = pc.localDescription
    return JSONResponse(
        {"sdp": local.sdp, "type": local.type, "stream_id": stream_id, "worker_id": state.worker_id}
    )
