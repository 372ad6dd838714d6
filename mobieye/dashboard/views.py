"""The dashboard API's JSON shapes (also its OpenAPI schema at ``/openapi.json``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mobieye.fleet.payloads import BoxAge, LatencyMs, WorkerState

# Boxes older than this (p95, frames since their detection) mean detections have stopped or fall
# far behind: the keyframe policy detects at least every 12 frames or 0.5 s when they run.
STALE_BOX_AGE_FRAMES = 45


class View(BaseModel):
    model_config = ConfigDict(frozen=True)


class WorkerView(WorkerState):
    """A worker's latest retained state, and when the dashboard last heard it."""

    last_seen: float = Field(description="Unix time this dashboard received the state.")
    stale: bool = Field(description="Online, but no fresh state for a while.")


class StreamView(View):
    id: str
    worker: str = Field(description="The worker serving it (from the newest stats).")
    worker_status: Literal["online", "offline"] | None = Field(
        description="That worker's status; None if its state was never seen."
    )
    fps: float | None = Field(description="Frames per second the worker received.")
    latency_ms: LatencyMs | None = Field(description="Capture-to-result p50/p95 of the period.")
    model: str | None
    keyframe_interval: int | None
    detector_fraction: float | None = Field(
        description="Detector share: detections completed per frame, in the last stats period."
    )
    box_age_frames: BoxAge | None = Field(
        default=None, description="How old the boxes were, in frames since their detection."
    )
    boxes_stale: bool = Field(
        default=False, description="Its boxes are old: detections have stopped or fall behind."
    )
    uplink_kbps: float | None = None
    damaged_frames: int | None = None
    sla_ms: float | None = Field(default=None, description="Latency target in force.")
    level: int | None = Field(default=None, description="The edge controller's level (0: best).")
    target_fps: float | None = Field(default=None, description="Frame rate the level allows.")
    bitrate_kbps: int | None = Field(default=None, description="Bitrate cap the level sets.")
    failovers: int | None = Field(default=None, description="The edge's failovers so far.")
    last_seen: float = Field(description="Unix time of the newest stats or state.")
    stale: bool = Field(description="No stats for a while, or its worker is offline.")


class SeriesPoint(View):
    t: float = Field(description="Unix time the stats arrived.")
    fps: float
    p50_ms: float | None
    p95_ms: float | None
    detector_fraction: float = Field(description="Detector share: detections per frame.")
    box_age_p95: float | None = Field(default=None, description="Box age p95, in frames.")
    uplink_kbps: float | None = None
    target_fps: float | None = Field(default=None, description="The controller's frame rate.")
    bitrate_kbps: int | None = Field(default=None, description="The controller's bitrate cap.")
    level: int | None = None
    model: str | None = None
    keyframe_interval: int | None = None
    worker: str | None = None


class TimelineEntry(View):
    """Something that changed a stream: a controller step, a failover, an operator's setting."""

    t: float = Field(description="Unix time it happened (or was first seen).")
    kind: Literal["decision", "failover", "settings"]
    text: str
    level: int | None = Field(default=None, description="decision: the level it set.")
    worker: str | None = Field(default=None, description="failover: the worker taking over.")
    from_worker: str | None = Field(default=None, description="failover: the worker lost.")


class Series(View):
    stream: str
    points: list[SeriesPoint] = Field(description="Oldest first.")
    timeline: list[TimelineEntry] = Field(default_factory=list, description="Oldest first.")


class ErrorBody(View):
    error: str
    problems: list[str] = Field(default_factory=list)


class CommandAccepted(View):
    stream: str
    topic: str
    command: dict[str, Any] = Field(description="The command as published.")
    known: bool = Field(description="Whether the dashboard knows the stream.")


class MqttStatus(View):
    broker: str | None
    prefix: str
    connected: bool
    last_error: str | None
    dropped_incoming: int


class StatusView(View):
    mqtt: MqttStatus
    messages: int
    malformed: int
    ignored: int
    last_malformed: str | None
    workers: int
    streams: int
