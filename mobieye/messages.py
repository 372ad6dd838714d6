"""Data-channel messages between edge agent and worker: JSON text, one object per message.

Every message has a ``type``. Parsing is strict: an unknown type, a missing field or a wrong value
is a :class:`MessageError` naming the problem, which the receiver logs and drops.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from mobieye.clock import DEFAULT_TICKS, RTP_CLOCK_HZ
from mobieye.errors import MessageError, validation_problems
from mobieye.ids import Id

MAX_MESSAGE_BYTES = 256 * 1024
PROTOCOL_VERSION = 1


class _Msg(BaseModel):
    # NaN and Infinity would be encoded as null, which the peer then refuses: refuse them here.
    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)


class Hello(_Msg):
    """Edge -> worker, first message: who the stream is and how its frames are stamped."""

    type: Literal["hello"] = "hello"
    version: int = PROTOCOL_VERSION
    stream_id: Id
    frame_ticks: int = Field(default=DEFAULT_TICKS, ge=1, le=RTP_CLOCK_HZ)
    fps: float = Field(default=30.0, gt=0, le=240)
    width: int = Field(default=0, ge=0)
    height: int = Field(default=0, ge=0)
    source: str = ""
    # After a failover: how many this stream has had, and the worker it lost last.
    failovers: int = Field(default=0, ge=0)
    previous_worker: Id | None = None


class LatencyReport(_Msg):
    """Edge -> worker: capture-to-result latencies measured since the last report."""

    type: Literal["latency"] = "latency"
    samples_ms: list[Annotated[float, Field(ge=0, le=600_000)]] = Field(max_length=10_000)


class Box(_Msg):
    xyxy: tuple[float, float, float, float]  # normalised to the frame size
    cls: int
    label: str
    score: float
    track_id: int


class Timings(_Msg):
    """Milliseconds spent on the worker for this frame."""

    queue_ms: float = 0.0  # decoded -> picked up by the stream's pipeline
    track_ms: float = 0.0
    detect_ms: float = 0.0  # inference of the detection these boxes came from (0: tracked)
    total_ms: float = 0.0  # decoded -> result sent


class Result(_Msg):
    """Worker -> edge, one per processed frame."""

    type: Literal["result"] = "result"
    seq: int
    pts: int
    source: Literal["detect", "track", "none", "local"]  # local: the edge's own model
    detect_seq: int | None = None  # the frame the freshest detection ran on
    model: str
    width: int
    height: int
    boxes: list[Box]
    timings: Timings
    detector_runs: int = 0  # detections run on this stream so far
    keyframe_interval: int | None = None  # the stream's current (tuned) interval


class ModelInfo(_Msg):
    label: str
    accuracy: float
    mean_ms: float  # measured inference time on this worker
    std_ms: float


class Welcome(_Msg):
    """Worker -> edge, when the data channel opens."""

    type: Literal["welcome"] = "welcome"
    worker_id: str
    model: str
    stream_id: str
    models: list[ModelInfo] = Field(default_factory=list)


class WorkerStats(_Msg):
    """Worker -> edge, about once a second: what the controller needs from the worker."""

    type: Literal["stats"] = "stats"
    models: list[ModelInfo]
    queue_ms: float  # mean decoded-to-processed wait of this stream's frames
    streams: int
    # Share of this stream's decoded frames the worker skipped (a newer one replaced them before
    # its pipeline got to them) since the last stats; None from workers that don't say.
    dropped_ratio: float | None = Field(default=None, ge=0, le=1)


class Control(_Msg):
    """Edge -> worker: the controller's choices for this stream (absent: unchanged).
    Worker -> edge: an operator's command (``sla_ms``)."""

    type: Literal["control"] = "control"
    model: str | None = Field(default=None, max_length=256)
    keyframe_interval: int | None = Field(default=None, ge=1, le=1000)
    max_keyframe_interval: int | None = Field(default=None, ge=1, le=1000)
    # What the edge applied itself, so the worker can export it with the stream's metrics.
    level: int | None = Field(default=None, ge=0, le=100)
    fps: float | None = Field(default=None, gt=0, le=240)
    max_width: int | None = Field(default=None, ge=16)
    bitrate_kbps: int | None = Field(default=None, ge=1)
    # Worker -> edge: an operator's new latency target (MQTT command) for the edge's controller.
    sla_ms: float | None = Field(default=None, ge=10, le=60_000)
    reason: str = Field(default="", max_length=500)


class Move(_Msg):
    """Worker -> edge: this worker is draining (SIGTERM, an operator's drain command): connect
    to another worker and leave within ``deadline_s``; it serves the stream until then."""

    type: Literal["move"] = "move"
    reason: str = Field(default="draining", max_length=200)
    deadline_s: float = Field(ge=0, le=3600)


class Moving(_Msg):
    """Edge -> worker, after a Move: how the move goes (``ok`` False: it can't leave, and
    ``detail`` says why), so a drain that runs out of time can say why a stream stayed."""

    type: Literal["moving"] = "moving"
    ok: bool
    detail: str = Field(default="", max_length=500)


class ErrorMessage(_Msg):
    """Worker -> edge: a message of the edge's was refused (it goes on streaming)."""

    type: Literal["error"] = "error"
    message: str


Message = Annotated[
    Hello | LatencyReport | Result | Welcome | WorkerStats | Control | Move | Moving | ErrorMessage,
    Field(discriminator="type"),
]
_ADAPTER: TypeAdapter[Message] = TypeAdapter(Message)


def parse_message(raw: str | bytes) -> Message:
    """Parse one data-channel message or raise MessageError saying what is wrong with it."""
    # A str is counted in UTF-8 bytes, as it crossed the wire (up to 4 per character).
    size = (
        len(raw)
        if isinstance(raw, bytes) or len(raw) > MAX_MESSAGE_BYTES
        else len(raw.encode("utf-8", "surrogatepass"))
    )
    if size > MAX_MESSAGE_BYTES:
        raise MessageError(f"message of {size} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        return _ADAPTER.validate_json(raw)
    except ValidationError as exc:
        raise MessageError(f"bad message: {validation_problems(exc)[0]}") from exc


def encode(msg: _Msg) -> str:
    return msg.model_dump_json()
