"""The worker's HTTP face: WebRTC signalling, health and metrics.

``POST /offer`` takes ``{"sdp", "type": "offer", "stream_id"?}`` and answers with the worker's
SDP; ``/healthz`` is 503 until the detector is loaded and whenever it can't detect (its thread
is gone, nothing completes while detections wait, or they all fail); ``/metrics`` is Prometheus
text.
Watching a stream (cloud_worker/viewers.py): ``POST /view`` (WebRTC, the same body with the
stream's id), ``GET /streams/{id}/mjpeg`` (the fallback), ``GET /viewers``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import re
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiortc import RTCPeerConnection, RTCSessionDescription
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field, ValidationError

from cloud_worker.detector_health import detector_problem
from cloud_worker.detector_pool import DetectorPool
from cloud_worker.fleet import FleetPresence
from cloud_worker.metrics import WorkerMetrics
from cloud_worker.session import StreamSession
from cloud_worker.viewers import ViewerHub, check_view_sdp
from mobieye.config import Settings
from mobieye.detector import Detector
from mobieye.errors import ModelError
from mobieye.webrtc import filter_sdp_candidates, rtc_configuration

log = logging.getLogger(__name__)

STATS_PERIOD_S = 1.0


class OfferRequest(BaseModel):
    sdp: str = Field(min_length=1)
    type: str
    stream_id: str | None = Field(default=None, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")


@dataclass
class WorkerState:
    settings: Settings
    detectors: dict[str, tuple[Detector, float]]  # label -> (detector, declared accuracy)
    worker_id: str
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)
    pool: DetectorPool | None = None
    load_error: str | None = None
    sessions: dict[str, StreamSession] = field(default_factory=dict)
    recent: deque[dict[str, object]] = field(default_factory=lambda: deque(maxlen=32))
    fleet: FleetPresence | None = None
    viewers: ViewerHub = field(init=False)
    _counter: int = 0

    def __post_init__(self) -> None:
        self.viewers = ViewerHub(self.settings)

    @property
    def ready(self) -> bool:
        return self.pool is not None

    def detector_problem(self) -> str | None:
        """Why this worker can't detect now (None: it can, or it is still loading)."""
        if self.pool is None:
            return None
        return detector_problem(self.pool.facts(), self.settings.worker.detector_stall_s)

    def forget(self, session: StreamSession) -> None:
        self.sessions.pop(session.stream_id, None)
        self.recent.append(session.summary())
        if self.fleet is not None:
            self.fleet.stream_ended(session.stream_id)

    def new_stream_id(self, wanted: str | None) -> str:
        self._counter += 1
        base = wanted or f"stream-{self._counter}"
        sid, n = base, 1
        while sid in self.sessions:
            n += 1
            sid = f"{base}-{n}"
        return sid


def _error(status: int, reason: str, state: WorkerState, kind: str) -> JSONResponse:
    state.metrics.offers_refused.labels(kind).inc()
    log.warning("offer refused (%s): %s", kind, reason)
    return JSONResponse({"error": reason}, status_code=status)


def check_sdp(sdp: str) -> str | None:
    """Cheap structural checks before aiortc parses it; returns the problem or None."""
    if not sdp.startswith("v=0"):
        return "SDP must start with 'v=0'"
    if not re.search(r"^m=video ", sdp, re.MULTILINE):
        return "SDP offers no video (no 'm=video' line)"
    return None


def parse_offer(body: bytes, state: WorkerState, kind: str = "") -> OfferRequest | JSONResponse:
    """The offer in a request body, or the 400 answer saying what is wrong with it.

    ``kind`` prefixes the refusal's metric label (``view_`` for viewers)."""
    limit = state.settings.worker.max_sdp_bytes
    if len(body) > limit:
        reason = f"offer of {len(body)} bytes exceeds the {limit}-byte limit"
        return _error(400, reason, state, kind + "too_large")
    try:
        req = OfferRequest.model_validate_json(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "body"
        return _error(400, f"bad offer: {where}: {err['msg']}", state, kind + "malformed")
    if req.type != "offer":
        reason = f"bad offer: type must be 'offer', got {req.type!r}"
        return _error(400, reason, state, kind + "malformed")
    problem = check_sdp(req.sdp)
    if problem:
        return _error(400, f"bad offer: {problem}", state, kind + "malformed")
    return req


def create_app(
    settings: Settings,
    detectors: dict[str, tuple[Detector, float]],
    worker_id: str,
    on_load_failure: Callable[[BaseException], None] | None = None,
) -> FastAPI:
    state = WorkerState(settings, detectors, worker_id)

    async def load() -> None:
        try:
            for detector, _ in detectors.values():
                await asyncio.to_thread(detector.load)
        except ModelError as exc:
            state.load_error = str(exc)
            log.error("%s", exc)
            if on_load_failure is not None:
                on_load_failure(exc)
            return
        m = state.metrics
        pool = DetectorPool(
            detectors,
            max_pending=settings.worker.max_streams,
            max_batch=settings.worker.max_batch,
            min_deadline_s=settings.worker.detection_deadline_s,
            on_restart=m.detector_restarts.inc,
            on_failure=m.detector_failures.inc,
        )
        await asyncio.to_thread(pool.profile)
        # Models, ONNX Runtime and torch leave a few million long-lived objects: a full garbage
        # collection over them stalls every stream for ~200 ms. Freeze them out of the collector.
        gc.collect()
        gc.freeze()
        state.pool = pool
        log.info("worker %s ready: models %s", worker_id, ", ".join(detectors))

    async def publish_stats() -> None:
        problem: str | None = None
        while True:
            await asyncio.sleep(STATS_PERIOD_S)
            for session in list(state.sessions.values()):
                session.send_stats(len(state.sessions))
            if state.pool is None:
                continue
            # Say it once when the worker stops being able to detect, and once when it recovers.
            now = state.detector_problem()
            state.metrics.detector_up.set(0 if now else 1)
            if now and not problem:
                log.error("worker %s cannot detect: %s", worker_id, now)
            elif problem and not now:
                log.warning("worker %s detects again", worker_id)
            problem = now

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loader = asyncio.create_task(load())
        stats = asyncio.create_task(publish_stats())
        if settings.mqtt.broker:
            state.fleet = FleetPresence(settings, state)
            await state.fleet.start()
        yield
        if state.fleet is not None:
            await state.fleet.stop()
        stats.cancel()
        loader.cancel()
        await asyncio.gather(*(s.close() for s in list(state.sessions.values())))
        await state.viewers.close()
        if state.pool is not None:
            state.pool.shutdown()

    app = FastAPI(title="MobiEye worker", lifespan=lifespan)
    app.state.worker = state

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        body = {
            "worker_id": worker_id,
            "models": list(detectors),
            "streams": len(state.sessions),
            "max_streams": settings.worker.max_streams,
        }
        if state.load_error:
            return JSONResponse({**body, "status": "failed", "error": state.load_error}, 503)
        if not state.ready:
            return JSONResponse({**body, "status": "loading"}, 503)
        problem = state.detector_problem()
        if problem:
            return JSONResponse({**body, "status": "failing", "error": problem}, 503)
        return JSONResponse({**body, "status": "ok"})

    @app.get("/streams")
    async def streams() -> JSONResponse:
        """Active streams and the last finished ones, with their counters."""
        return JSONResponse(
            {
                "active": [s.summary() for s in state.sessions.values()],
                "recent": list(state.recent),
            }
        )

    @app.get("/metrics")
    async def metrics() -> Response:
        state.metrics.streams.set(len(state.sessions))
        return PlainTextResponse(
            generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST
        )

    @app.get("/viewers")
    async def viewers() -> JSONResponse:
        return JSONResponse(state.viewers.summary())

    @app.post("/view")
    async def view(request: Request) -> JSONResponse:
        """A viewer's offer (receive-only video and a data channel it creates) for a stream."""
        req = parse_offer(await request.body(), state, "view_")
        if isinstance(req, JSONResponse):
            return req
        problem = (
            "stream_id: the stream to watch is required"
            if req.stream_id is None
            else check_view_sdp(req.sdp)
        )
        if problem:
            return _error(400, f"bad offer: {problem}", state, "view_malformed")
        session = state.sessions.get(req.stream_id or "")
        if session is None:
            return _error(404, f"no active stream {req.stream_id!r}", state, "view_unknown")
        full = state.viewers.refusal(session)
        if full:
            return _error(503, full, state, "view_capacity")
        try:
            answer = await state.viewers.open_webrtc(session, req.sdp)
        except Exception as exc:  # aiortc raises assorted errors on bad SDP
            return _error(400, f"bad offer: SDP rejected: {exc}", state, "view_sdp")
        return JSONResponse({"sdp": answer.sdp, "type": answer.type, "stream_id": req.stream_id})

    @app.get("/streams/{stream_id}/mjpeg", response_model=None)
    async def mjpeg(stream_id: str) -> Response:
        """The stream's frames with their boxes drawn, as MJPEG: when WebRTC can't connect."""
        session = state.sessions.get(stream_id)
        if session is None:
            return JSONResponse({"error": f"no active stream {stream_id!r}"}, 404)
        full = state.viewers.refusal(session)
        if full:
            return JSONResponse({"error": full}, 503)
        return state.viewers.open_mjpeg(session)

    @app.post("/offer")
    async def offer(request: Request) -> JSONResponse:
        req = parse_offer(await request.body(), state)
        if isinstance(req, JSONResponse):
            return req
        if state.pool is None:
            return _error(
                503, state.load_error or "worker is still loading its model", state, "not_ready"
            )
        problem = state.detector_problem()
        if problem:
            return _error(503, f"worker cannot detect: {problem}", state, "failing")
        if len(state.sessions) >= settings.worker.max_streams:
            return _error(
                503,
                f"worker at capacity ({settings.worker.max_streams} streams): try another worker",
                state,
                "capacity",
            )

        sdp = filter_sdp_candidates(req.sdp, settings.webrtc.loopback_only)
        pc = RTCPeerConnection(rtc_configuration(settings.webrtc.ice_servers))
        stream_id = state.new_stream_id(req.stream_id)
        session = StreamSession(
            stream_id,
            pc,
            settings,
            state.pool,
            state.metrics,
            worker_id,
            on_closed=state.forget,
        )
        state.sessions[stream_id] = session
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
        except Exception as exc:  # aiortc raises assorted errors on bad SDP
            await session.close()
            return _error(400, f"bad offer: SDP rejected: {exc}", state, "sdp")
        log.info("stream %s: offer accepted (%d active)", stream_id, len(state.sessions))
        if state.fleet is not None:
            state.fleet.stream_started(session)
        local = pc.localDescription
        return JSONResponse(
            {"sdp": local.sdp, "type": local.type, "stream_id": stream_id, "worker_id": worker_id}
        )

    return app
