"""The JSON payloads on MobiEye's MQTT topics, as strict pydantic models.

Incoming payloads ignore unknown fields (a newer peer may add some) but never coerce types;
commands refuse unknown fields, so a typo is answered with a reason instead of silently doing
nothing.
"""

from __future__ import annotations

import math
import time
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mobieye.errors import validation_problems
from mobieye.fleet import topics
from mobieye.fleet.errors import PayloadError
from mobieye.ids import Id

NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]


def _now() -> float:
    return time.time()


class Payload(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


class WorkerState(Payload):
    """Retained on ``P/workers/<id>/state``; the last will sets it to ``offline(id)``."""

    id: Id
    status: Literal["online", "offline"]
    url: str | None = Field(default=None, description="Signalling base URL (POST url/offer).")
    models: list[str] = Field(default_factory=list, max_length=64)
    model_sha256: dict[str, Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]] = Field(
        default_factory=dict, max_length=64, description="SHA-256 of each model it serves."
    )
    capacity: int = Field(default=0, ge=0, description="Most streams this worker takes.")
    capacity_basis: Literal["fixed", "measured", "prior"] | None = Field(
        default=None,
        description="fixed: worker.max_streams; measured: its own costs at the SLA; prior: "
        "profiled detector time until enough frames have been served.",
    )
    keyframe_stretch: NonNegative | None = Field(
        default=None, description="How much its overload governor stretches keyframes (1: not)."
    )
    streams: int = Field(default=0, ge=0, description="Streams it serves now.")
    load: NonNegative = Field(
        default=0.0, description="0..1 and beyond: detector busy fraction or streams/capacity."
    )
    cpu: NonNegative | None = Field(default=None, description="Process CPU use, 1.0 = one core.")
    problem: str | None = Field(
        default=None, max_length=500,
        description="Why this worker can't detect now (None: it can); edges don't choose it.",
    )  # fmt: skip
    draining: bool = Field(
        default=False, description="It stops admitting and moves its streams away; then exits."
    )
    updated: NonNegative = Field(default_factory=_now, description="Unix time of this state.")

    @classmethod
    def offline(cls, worker_id: str) -> WorkerState:
        return cls(id=worker_id, status="offline")

    @property
    def has_room(self) -> bool:
        return (
            self.status == "online"
            and not self.draining
            and self.problem is None
            and self.streams < self.capacity
        )


class LatencyMs(Payload):
    p50: NonNegative
    p95: NonNegative


class BoxAge(Payload):
    """Frames between results and the detection their boxes come from (0: detected on it)."""

    p50: NonNegative
    p95: NonNegative
    max: NonNegative


MAX_DECISIONS = 20  # per stats message; the edge's controller decides about once a second


class ControllerDecision(Payload):
    """One step of the edge's adaptive controller, as the edge told the worker (Control)."""

    at: NonNegative = Field(description="Unix time the worker received it.")
    level: int = Field(ge=0)
    fps: NonNegative | None = None
    max_width: int | None = Field(default=None, ge=1)
    bitrate_kbps: int | None = Field(default=None, ge=1)
    model: str | None = Field(default=None, description="Set only when it changed the model.")
    reason: str = Field(default="", max_length=500)


class StreamStats(Payload):
    """Published every ``mqtt.stats_period_s`` on ``P/streams/<id>/stats`` (not retained)."""

    stream: Id
    worker: Id
    fps: NonNegative
    latency_ms: LatencyMs | None = None
    model: str | None = None
    keyframe_interval: int | None = Field(default=None, ge=1)
    detector_fraction: float = Field(
        default=0.0, ge=0, le=1, allow_inf_nan=False,
        description="Detector share: detections completed per result sent, in the period.",
    )  # fmt: skip
    box_age_frames: BoxAge | None = Field(
        default=None, description="How old the results' boxes were in the period (None: none "
        "sent, or no detection has completed yet).",
    )  # fmt: skip
    uplink_kbps: NonNegative | None = Field(
        default=None, description="RTP payload received in the period (None: not measured)."
    )
    damaged_frames: int = Field(default=0, ge=0)
    controller: ControllerDecision | None = Field(
        default=None, description="The edge controller's setting in force (None: no controller)."
    )
    decisions: list[ControllerDecision] = Field(
        default_factory=list, max_length=MAX_DECISIONS, description="Received since last stats."
    )
    failovers: int = Field(default=0, ge=0, description="The edge's failovers so far.")
    previous_worker: Id | None = Field(default=None, description="The worker it failed over from.")
    updated: NonNegative = Field(default_factory=_now)


Setting = Literal["model", "sla_ms", "keyframe_interval"]
SETTINGS: tuple[Setting, ...] = ("model", "sla_ms", "keyframe_interval")  # what a Command sets


class StreamState(Payload):
    """Retained on ``P/streams/<id>/state``: the settings in force, mirroring ``.../set``."""

    stream: Id
    worker: Id
    status: Literal["live", "ended"] = "live"
    model: str | None = None
    sla_ms: NonNegative | None = None
    keyframe_interval: int | None = Field(default=None, ge=1)
    changed: list[Setting] = Field(
        default_factory=list,
        description="The fields the command behind this state set (none: the stream's start).",
    )
    updated: NonNegative = Field(default_factory=_now)


class ObjectEvent(Payload):
    """On ``P/events``: one tracked object appeared, moved or left."""

    type: Literal["new", "update", "end"]
    stream: Id
    track_id: int = Field(ge=0)
    label: str
    box: list[float] = Field(
        min_length=4, max_length=4, description="x1, y1, x2, y2 normalised to the frame size."
    )
    score: float = Field(ge=0, le=1, allow_inf_nan=False)
    ts: NonNegative

    @field_validator("box")
    @classmethod
    def _finite_box(cls, v: list[float]) -> list[float]:
        if not all(math.isfinite(x) for x in v):
            raise ValueError("box coordinates must be finite")
        if v[0] > v[2] or v[1] > v[3]:
            axis, lo, hi = ("x", v[0], v[2]) if v[0] > v[2] else ("y", v[1], v[3])
            raise ValueError(f"box must be [x1, y1, x2, y2] with x1 <= x2 and y1 <= y2, "
                             f"but {axis}1 {lo:g} > {axis}2 {hi:g}")  # fmt: skip
        return v


class Command(Payload):
    """On ``P/workers/<id>/set`` or ``P/streams/<id>/set``; unknown fields are refused."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    model: str | None = Field(default=None, min_length=1, max_length=256)  # as Control.model
    sla_ms: float | None = Field(default=None, ge=10, le=60_000, allow_inf_nan=False)
    keyframe_interval: int | None = Field(default=None, ge=1, le=1000)
    # On a worker's topic only: drain it (stop admitting, move its streams away, exit).
    drain: Literal[True] | None = None

    @model_validator(mode="after")
    def _sets_something(self) -> Command:
        if (self.model is None and self.sla_ms is None and self.keyframe_interval is None
                and self.drain is None):  # fmt: skip
            raise ValueError(
                "a command must set at least one of model, sla_ms, keyframe_interval, drain"
            )
        return self


M = TypeVar("M", bound=BaseModel)


def parse_payload(model_cls: type[M], raw: bytes | str, topic: str | None = None) -> M:
    """Validate a JSON payload; raise PayloadError naming the topic and every problem."""
    try:
        return model_cls.model_validate_json(raw)
    except ValidationError as exc:
        problems = validation_problems(exc)
        where = topic if topic is not None else "(unknown topic)"
        raise PayloadError(
            f"bad {model_cls.__name__} payload on {where}: {'; '.join(problems)}",
            topic=topic,
            problems=problems,
        ) from None


def worker_will(prefix: str, worker_id: str) -> tuple[str, bytes, bool]:
    """The last will for a worker's link: its state topic, set offline, retained."""
    payload = WorkerState.offline(worker_id).model_dump_json(include={"id", "status"})
    return topics.worker_state(prefix, worker_id), payload.encode(), True
