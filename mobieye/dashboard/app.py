"""The dashboard's HTTP app: a JSON API over the FleetStore, commands to streams, and minimal
pages. Its MQTT link lives with the app (lifespan), feeding the store from the fleet topics."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from mobieye.config import FleetConfig, MqttConfig, WebRTCConfig
from mobieye.dashboard.api import ApiError
from mobieye.dashboard.api import router as api_router
from mobieye.dashboard.auth import PhoneGrants, TokenAuth
from mobieye.dashboard.page_routes import router as pages_router
from mobieye.dashboard.proxy import router as proxy_router
from mobieye.dashboard.store import FleetStore
from mobieye.dashboard.views import (
    ErrorBody,
)
from mobieye.errors import validation_problems
from mobieye.fleet import topics
from mobieye.fleet.access import WorkerAccess
from mobieye.fleet.allowlist import UrlAllowlist
from mobieye.mqtt.client import MqttLink

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")  # the pages' ES modules, no build step
_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorBody, "description": "No or a wrong token."},
    404: {"model": ErrorBody, "description": "Unknown stream."},
}


def _error(status: int, message: str, problems: list[str] | None = None) -> JSONResponse:
    body = ErrorBody(error=message, problems=problems or [])
    return JSONResponse(body.model_dump(), status_code=status)


def create_dashboard_app(
    mqtt_cfg: MqttConfig,
    token: str,
    *,
    store: FleetStore | None = None,
    fleet_cfg: FleetConfig | None = None,
    access: WorkerAccess | None = None,
    webrtc: WebRTCConfig | None = None,
) -> FastAPI:
    """The app; raises BrokerError at once when ``mqtt_cfg`` names no usable broker.

    ``fleet_cfg`` says which advertised workers are trusted; ``access`` how to call them (the
    workers' token and certificate check) when a page watches a stream or a phone streams;
    ``webrtc`` the STUN/TURN servers pages get (``GET /api/ice-servers``, TURN credentials
    minted here)."""
    prefix = mqtt_cfg.prefix
    allowlist = UrlAllowlist.from_config(fleet_cfg or FleetConfig())
    # Stats come every stats period; a few missed in a row make a stream stale.
    fleet = store or FleetStore(
        prefix, stale_after_s=max(5.0, 5 * mqtt_cfg.stats_period_s), allowlist=allowlist
    )
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
    app.state.mqtt = mqtt_cfg
    app.state.access = access or WorkerAccess()
    app.state.grants = PhoneGrants()
    app.state.webrtc = webrtc or WebRTCConfig()

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
        problems = validation_problems(exc)
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

    app.include_router(api_router)
    app.include_router(proxy_router)
    app.include_router(pages_router)
    # check_dir=False: an install without the assets still serves the API (pages lose scripts).
    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")
    app.add_middleware(TokenAuth, token=token, grants=app.state.grants)
    return app
