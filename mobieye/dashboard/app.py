"""The dashboard's HTTP app: a JSON API over the FleetStore, commands to streams, and minimal
pages. Its MQTT link lives with the app (lifespan), feeding the store from the fleet topics."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from mobieye.config import MqttConfig
from mobieye.dashboard import pages
from mobieye.dashboard.auth import TokenAuth
from mobieye.dashboard.proxy import add_view_routes
from mobieye.dashboard.store import FleetStore
from mobieye.dashboard.views import (
    CommandAccepted,
    ErrorBody,
    MqttStatus,
    Series,
    StatusView,
    StreamView,
    WorkerView,
)
from mobieye.errors import MobiEyeError
from mobieye.mqtt import Command, MqttLink, ObjectEvent, PayloadError, parse_payload, topics

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")  # the pages' ES modules, no build step
MAX_COMMAND_BYTES = 16 * 1024  # a command is a few dozen bytes
MAX_EVENTS_LIMIT = 1000  # the store keeps fewer anyway (FleetStore.max_events)
_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorBody, "description": "No or a wrong token."},
    404: {"model": ErrorBody, "description": "Unknown stream."},
}


class ApiError(Exception):
    """Answered as ``{"error": message, "problems": [...]}`` with ``status``."""

    def __init__(self, status: int, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.problems = problems or []


def _error(status: int, message: str, problems: list[str] | None = None) -> JSONResponse:
    body = ErrorBody(error=message, problems=problems or [])
    return JSONResponse(body.model_dump(), status_code=status)


def _unknown(stream_id: str) -> str:
    return (
        f"unknown stream {stream_id!r}: no stats or state seen for it "
        "(it ended, was never started, or its worker publishes to another broker or prefix)"
    )


def create_dashboard_app(
    mqtt_cfg: MqttConfig, token: str, *, store: FleetStore | None = None
) -> FastAPI:
    """The app; raises BrokerError at once when ``mqtt_cfg`` names no usable broker."""
    prefix = mqtt_cfg.prefix
    # Stats come every stats period; a few missed in a row make a stream stale.
    fleet = store or FleetStore(prefix, stale_after_s=max(5.0, 5 * mqtt_cfg.stats_period_s))
    link = MqttLink(mqtt_cfg, f"mobieye-dashboard-{os.getpid()}-{secrets.token_hex(3)}")

    def feed(topic: str, payload: bytes) -> None:
        fleet.on_message(topic, payload)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        for topic_filter in (
            topics.all_worker_states(prefix),
            topics.all_stream_stats(prefix),
            topics.all_stream_states(prefix),
            topics.events(prefix),
        ):
            await link.subscribe(topic_filter, feed)
        await link.start()
        log.info("dashboard following the fleet under %s/ on %s", prefix, mqtt_cfg.broker)
        try:
            yield
        finally:
            await link.stop()

    app = FastAPI(title="MobiEye dashboard", lifespan=lifespan, responses=_ERRORS)
    app.state.store = fleet
    app.state.link = link

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> Response:
        return _error(exc.status, exc.message, exc.problems)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> Response:
        response = _error(exc.status_code, str(exc.detail))
        response.headers.update(exc.headers or {})  # e.g. Allow on a 405
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> Response:
        problems = [".".join(map(str, e["loc"])) + ": " + e["msg"] for e in exc.errors()]
        return _error(422, "invalid request: " + "; ".join(problems), problems)

    @app.exception_handler(Exception)
    async def internal_error(_request: Request, _exc: Exception) -> Response:
        # Starlette re-raises after this, so the server logs the traceback; the client gets
        # a reason, never the trace.
        return _error(500, "internal error (see the dashboard's log)")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        # Up even while the broker is away: the link reconnects by itself.
        return {"status": "ok", "mqtt": "connected" if link.connected.is_set() else "connecting"}

    @app.get("/api/status")
    async def status() -> StatusView:
        c = fleet.counters
        mqtt = MqttStatus(
            broker=mqtt_cfg.broker,
            prefix=prefix,
            connected=link.connected.is_set(),
            last_error=link.last_error,
            dropped_incoming=link.dropped_incoming,
        )
        return StatusView(
            mqtt=mqtt,
            messages=c.messages,
            malformed=c.malformed,
            ignored=c.ignored,
            last_malformed=c.last_malformed,
            workers=len(fleet.workers()),
            streams=len(fleet.streams()),
        )

    @app.get("/api/workers")
    async def workers() -> list[WorkerView]:
        return fleet.workers()

    @app.get("/api/streams")
    async def streams() -> list[StreamView]:
        return fleet.streams()

    @app.get("/api/streams/{stream_id}")
    async def stream(stream_id: str) -> StreamView:
        view = fleet.stream(stream_id)
        if view is None:
            raise ApiError(404, _unknown(stream_id))
        return view

    @app.get("/api/streams/{stream_id}/series")
    async def series(stream_id: str) -> Series:
        """The stream's chart points and its timeline (controller steps, failovers, settings)."""
        points = fleet.series(stream_id)
        if points is None:
            raise ApiError(404, _unknown(stream_id))
        return Series(stream=stream_id, points=points, timeline=fleet.timeline(stream_id) or [])

    @app.get("/api/events")
    async def events(
        limit: Annotated[int, Query(ge=1, le=MAX_EVENTS_LIMIT)] = 100,
        stream: str | None = None,
    ) -> list[ObjectEvent]:
        """The newest object events first."""
        return fleet.events(limit, stream)

    @app.post(
        "/api/streams/{stream_id}/set",
        status_code=202,
        responses={400: {"model": ErrorBody}, 413: {"model": ErrorBody}, 422: {"model": ErrorBody}},
    )
    async def set_stream(stream_id: str, request: Request) -> CommandAccepted:
        """Publish a Command (model, sla_ms, keyframe_interval) to the stream's worker."""
        try:
            topic = topics.stream_set(prefix, stream_id)
        except MobiEyeError as exc:
            raise ApiError(400, str(exc)) from None
        body = await request.body()
        if len(body) > MAX_COMMAND_BYTES:
            raise ApiError(413, f"command body over {MAX_COMMAND_BYTES} bytes")
        try:
            command = parse_payload(Command, body, topic)
        except PayloadError as exc:
            raise ApiError(422, str(exc), exc.problems) from None
        payload = command.model_dump(exclude_none=True)
        # QoS 1: an operator's command should not vanish in a congested link.
        link.publish(topic, command.model_dump_json(exclude_none=True), qos=1)
        known = fleet.stream(stream_id) is not None
        log.info("command to stream %s: %s", stream_id, payload)
        return CommandAccepted(stream=stream_id, topic=topic, command=payload, known=known)

    add_view_routes(app, fleet)
    # check_dir=False: an install without the assets still serves the API (pages lose scripts).
    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")

    @app.get("/", response_class=HTMLResponse)
    async def index() -> Response:
        return pages.index_page(fleet.workers(), fleet.streams())

    @app.get("/phone", response_class=HTMLResponse)
    async def phone_page() -> Response:
        return pages.phone_page()

    @app.get("/streams/{stream_id}", response_class=HTMLResponse)
    async def stream_page(stream_id: str) -> Response:
        view = fleet.stream(stream_id)
        if view is None:
            return pages.not_found_page(_unknown(stream_id))
        return pages.stream_page(view, fleet.events(50, stream_id))

    app.add_middleware(TokenAuth, token=token)
    return app
