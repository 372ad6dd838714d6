"""The dashboard's JSON API under ``/api``: the fleet's picture (FleetStore) and commands to
streams. Its OpenAPI schema is at ``/openapi.json``."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from mobieye.config import MqttConfig
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
from mobieye.fleet import topics
from mobieye.fleet.errors import PayloadError
from mobieye.fleet.payloads import Command, ObjectEvent, parse_payload
from mobieye.mqtt.client import MqttLink

log = logging.getLogger(__name__)

MAX_COMMAND_BYTES = 16 * 1024  # a command is a few dozen bytes
MAX_EVENTS_LIMIT = 1000  # the store keeps fewer anyway (FleetStore.max_events)


class ApiError(Exception):
    """Answered as ``{"error": message, "problems": [...]}`` with ``status``."""

    def __init__(self, status: int, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.problems = problems or []


def unknown(stream_id: str) -> str:
    return (
        f"unknown stream {stream_id!r}: no stats or state seen for it "
        "(it ended, was never started, or its worker publishes to another broker or prefix)"
    )


def _store(request: Request) -> FleetStore:
    store: FleetStore = request.app.state.store
    return store


def _link(request: Request) -> MqttLink:
    link: MqttLink = request.app.state.link
    return link


def _mqtt(request: Request) -> MqttConfig:
    cfg: MqttConfig = request.app.state.mqtt
    return cfg


Store = Annotated[FleetStore, Depends(_store)]
Link = Annotated[MqttLink, Depends(_link)]
Mqtt = Annotated[MqttConfig, Depends(_mqtt)]

router = APIRouter(prefix="/api")


@router.get("/status")
async def status(fleet: Store, link: Link, cfg: Mqtt) -> StatusView:
    c = fleet.counters
    mqtt = MqttStatus(
        broker=cfg.broker,
        prefix=cfg.prefix,
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


@router.get("/workers")
async def workers(fleet: Store) -> list[WorkerView]:
    return fleet.workers()


@router.get("/streams")
async def streams(fleet: Store) -> list[StreamView]:
    return fleet.streams()


@router.get("/streams/{stream_id}")
async def stream(stream_id: str, fleet: Store) -> StreamView:
    view = fleet.stream(stream_id)
    if view is None:
        raise ApiError(404, unknown(stream_id))
    return view


@router.get("/streams/{stream_id}/series")
async def series(stream_id: str, fleet: Store) -> Series:
    """The stream's chart points and its timeline (controller steps, failovers, settings)."""
    points = fleet.series(stream_id)
    if points is None:
        raise ApiError(404, unknown(stream_id))
    return Series(stream=stream_id, points=points, timeline=fleet.timeline(stream_id) or [])


@router.get("/events")
async def events(
    fleet: Store,
    limit: Annotated[int, Query(ge=1, le=MAX_EVENTS_LIMIT)] = 100,
    stream: str | None = None,
) -> list[ObjectEvent]:
    """The newest object events first."""
    return fleet.events(limit, stream)


@router.post(
    "/streams/{stream_id}/set",
    status_code=202,
    responses={400: {"model": ErrorBody}, 413: {"model": ErrorBody}, 422: {"model": ErrorBody}},
)
async def set_stream(
    stream_id: str, request: Request, fleet: Store, link: Link, cfg: Mqtt
) -> CommandAccepted:
    """Publish a Command (model, sla_ms, keyframe_interval) to the stream's worker."""
    try:
        topic = topics.stream_set(cfg.prefix, stream_id)
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
