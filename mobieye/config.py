"""One configuration for every MobiEye process.

Precedence, highest first: command-line flags, ``MOBIEYE_*`` environment variables (nested with
``__``, e.g. ``MOBIEYE_DETECTOR__IMGSZ=320``; ``MOBIEYE_MODEL`` is a shortcut for the model path),
the YAML file (``--config`` or ``MOBIEYE_CONFIG``), then the defaults, which work out of the box.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from mobieye.errors import ConfigError, validation_problems


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_imgsz(v: int) -> int:
    if v % 32:
        raise ValueError(f"must be a multiple of 32, got {v}")
    return v


RuntimeName = Literal["auto", "onnxruntime", "openvino-fp32", "openvino-bf16", "openvino-int8"]


class DetectorConfig(_Section):
    model: str | None = Field(
        default=None,
        description="Detector weights: a .pt, .onnx or OpenVINO export dir, or a stock name "
        "such as yolo11n.pt (downloaded by ultralytics where there is internet).",
    )
    imgsz: int = Field(default=416, ge=32, le=1920, description="Inference size, multiple of 32.")
    conf: float = Field(default=0.25, gt=0.0, lt=1.0)
    iou: float = Field(default=0.5, gt=0.0, lt=1.0)
    max_det: int = Field(default=100, ge=1, le=1000)
    threads: int = Field(default=1, ge=1, le=64, description="CPU threads for inference.")
    classes: list[int] | None = Field(default=None, description="Keep only these class ids.")
    device: str | None = Field(
        default=None,
        pattern=r"^(cpu|cuda(:\d+)?|mps|\d+)$",
        description="Where inference runs: cpu, cuda, cuda:N or mps (default: ultralytics' "
        "choice, the first GPU PyTorch sees for .pt; ONNX Runtime's own providers for .onnx).",
    )
    half: bool = Field(default=False, description="FP16 inference (CUDA only).")
    runtime: RuntimeName = Field(
        default="auto",
        description="How an ONNX model runs: auto (the fastest runtime that `mobieye models "
        "profile` measured for it on this machine within 0.02 F1 of FP32, else onnxruntime), "
        "onnxruntime (FP32), or an OpenVINO variant built once into the cache (fp32, bf16, "
        "int8 quantised with NNCF on TUD-Campus frames). A variant that can't be built falls "
        "back to onnxruntime with a warning.",
    )
    sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-fA-F]{64}$",
        description="Expected SHA-256 of the model file: any other file is refused at load.",
    )

    _imgsz = field_validator("imgsz")(classmethod(lambda cls, v: _check_imgsz(v)))

    @model_validator(mode="after")
    def _half_on_gpu(self) -> DetectorConfig:
        if self.half and self.device in ("cpu", "mps"):
            raise ValueError(f"half (FP16) needs a CUDA device, not {self.device!r}")
        return self


class LadderModel(_Section):
    """One rung of the model ladder: a detector, its input size and its declared accuracy."""

    path: str
    imgsz: int = Field(default=416, ge=32, le=1920)
    accuracy: float = Field(ge=0, le=100, description="Declared accuracy, e.g. COCO mAP.")
    name: str | None = Field(default=None, description="Default: <file stem>@<imgsz>.")
    sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-fA-F]{64}$",
        description="Expected SHA-256 of the file: any other file is refused at load.",
    )

    _imgsz = field_validator("imgsz")(classmethod(lambda cls, v: _check_imgsz(v)))

    @property
    def label(self) -> str:
        return self.name or f"{Path(self.path).stem}@{self.imgsz}"


class ControllerConfig(_Section):
    enabled: bool = Field(default=True, description="Adapt the stream to hold the SLA.")
    sla_ms: float = Field(
        default=100.0, gt=0, le=60_000, description="Target p95 capture-to-result latency."
    )
    period_s: float = Field(default=1.0, gt=0, le=60, description="Decide this often.")
    min_dwell_s: float = Field(
        default=3.0, ge=0, description="Hold a setting at least this long (no flapping)."
    )
    confirm: int = Field(
        default=2, ge=1, le=100, description="Consecutive decisions before a model switch."
    )
    accuracy_target: float = Field(
        default=0.85,
        gt=0,
        le=1,
        description="Mean IoU of tracked boxes against fresh detections the keyframe "
        "interval is tuned toward.",
    )
    uplink_kbps: float | None = Field(
        default=None,
        gt=0,
        le=100_000,
        description="Edge-first uplink (edge.uplink: keyframes): the budget its stills must "
        "fit; quality and keyframe rate follow it (none: the SLA alone governs them).",
    )


class KeyframeConfig(_Section):
    interval: int = Field(
        default=6, ge=1, le=1000, description="Detect every N-th frame (starting value)."
    )
    min_interval: int = Field(default=2, ge=1, description="Never detect more often than this.")
    max_age_s: float = Field(
        default=0.5,
        gt=0,
        le=3600,
        description="Detect when boxes are older (starting value: tuned online with the "
        "interval, from measured drift, when adaptive).",
    )
    max_age_cap_s: float = Field(
        default=2.0, gt=0, le=3600, description="Upper bound when the age limit is tuned online."
    )
    scene_change: float = Field(
        default=0.12, gt=0, le=1, description="Mean absolute frame change (0-1) that triggers."
    )
    min_track_quality: float = Field(
        default=0.5, ge=0, le=1, description="Detect when tracking quality drops below."
    )
    max_interval: int = Field(
        default=12, ge=1, le=1000, description="Upper bound when the interval is tuned online."
    )
    min_local_agreement: float = Field(
        default=0.6,
        ge=0,
        le=1,
        description="Edge-first: detect (send a still) when the on-device model's boxes agree "
        "with the tracked ones less than this (F1 at IoU 0.5): a hard frame.",
    )
    adaptive: bool = Field(
        default=True,
        description="Tune the interval online: shorten it when tracked boxes disagree with "
        "fresh detections (controller.accuracy_target), lengthen it when they agree.",
    )
    wait_for_detection: bool = Field(
        default=False,
        description="Hold a keyframe's result until its detection is done (conventional and "
        "DeepStream-style pipelines) instead of tracking on while it runs.",
    )
    track_between: bool = Field(
        default=True,
        description="Move boxes by optical flow between keyframes (off: a frame shows the "
        "newest detection as it was, like a conventional cloud pipeline).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> KeyframeConfig:
        # A bound left at its default follows an interval set past it (--keyframe-interval 1
        # means every frame, not an error about a min_interval nobody set).
        given = self.model_fields_set
        if self.min_interval > self.interval and "min_interval" not in given:
            self.min_interval = self.interval
        if self.interval > self.max_interval and "max_interval" not in given:
            self.max_interval = self.interval
        if self.max_age_s > self.max_age_cap_s and "max_age_cap_s" not in given:
            self.max_age_cap_s = self.max_age_s
        if self.max_age_s > self.max_age_cap_s:
            raise ValueError(
                f"max_age_s {self.max_age_s} must not exceed max_age_cap_s {self.max_age_cap_s}"
            )
        if self.min_interval > self.interval:
            raise ValueError(
                f"min_interval {self.min_interval} must not exceed interval {self.interval}"
            )
        if self.interval > self.max_interval:
            raise ValueError(
                f"interval {self.interval} must not exceed max_interval {self.max_interval}"
            )
        return self


class IceServer(_Section):
    urls: list[str]
    username: str | None = None
    credential: str | None = None


class TurnConfig(_Section):
    """A TURN relay with coturn's shared-secret REST scheme (``use-auth-secret``): whoever has
    the secret mints credentials that expire; edges without it get theirs from the worker
    (``GET /ice-servers``), phone pages from the dashboard. Never a static password."""

    urls: list[str] = Field(
        default_factory=list,
        max_length=8,
        description="TURN URLs, e.g. turn:turn.example.org:3478?transport=udp and ?transport=tcp "
        "(tried in order: the first that allocates is used).",
    )
    secret: str | None = Field(
        default=None, description="coturn's static-auth-secret (env MOBIEYE_WEBRTC__TURN__SECRET)."
    )
    ttl_s: float = Field(default=3600.0, ge=60, le=86_400, description="Credential lifetime.")
    user: str = Field(default="mobieye", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")

    @field_validator("urls")
    @classmethod
    def _turn_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(("turn:", "turns:")):
                raise ValueError(
                    f"{url!r} is not a TURN URL (turn:HOST[:PORT][?transport=udp|tcp])"
                )
        return urls


class WebRTCConfig(_Section):
    codec: Literal["vp8", "h264"] = "vp8"
    loopback_only: bool = Field(
        default=True, description="Gather and accept only 127.0.0.1 ICE candidates."
    )
    ice_servers: list[IceServer] = Field(default_factory=list, description="STUN/TURN servers.")
    turn: TurnConfig = Field(default_factory=TurnConfig)
    ice_transport_policy: Literal["all", "relay"] = Field(
        default="all", description="relay: only relayed (TURN) candidates, hiding addresses."
    )
    low_latency_receive: bool = Field(
        default=True, description="Release frames on their marker packet; bound loss stalls."
    )
    jitter_capacity: int = Field(default=64, ge=16, le=1024)
    sctp_rto_min_ms: float = Field(
        default=200.0,
        ge=10,
        le=1000,
        description="Floor of the data channel's retransmission timer (RFC 4960's 1000 ms "
        "left a still lost at its tail a second late on lossy links).",
    )
    min_bitrate_kbps: int = Field(default=250, ge=30)
    max_bitrate_kbps: int = Field(default=1500, ge=30)
    bitrate_hysteresis: float = Field(
        default=0.3,
        ge=0,
        lt=1,
        description="Ignore encoder bitrate moves smaller than this share (aiortc restarts the "
        "encoder, with a keyframe, on every move over 10%); 0 keeps aiortc's behaviour.",
    )

    @field_validator("jitter_capacity")
    @classmethod
    def _power_of_two(cls, v: int) -> int:
        if v & (v - 1):
            raise ValueError(f"must be a power of two, got {v}")
        return v

    @model_validator(mode="after")
    def _bitrates(self) -> WebRTCConfig:
        given = self.model_fields_set  # a default bound follows the one set (as keyframe's)
        lo, hi = self.min_bitrate_kbps, self.max_bitrate_kbps
        if lo > hi and "min_bitrate_kbps" not in given:
            self.min_bitrate_kbps = hi
        elif lo > hi and "max_bitrate_kbps" not in given:
            self.max_bitrate_kbps = lo
        elif lo > hi:
            raise ValueError(f"min_bitrate_kbps {lo} must not exceed max_bitrate_kbps {hi}")
        return self


class WorkerConfig(_Section):
    host: str = Field(default="127.0.0.1", description="Bind address; anything wider is explicit.")
    port: int = Field(default=8000, ge=0, le=65535)
    max_streams: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="Streams this worker admits. Unset: its measured capacity at the SLA (its "
        "models on its runtime and cores, mobieye/capacity.py), advertised in its MQTT state.",
    )
    max_sdp_bytes: int = Field(default=64 * 1024, ge=1024)
    max_batch: int = Field(
        default=4, ge=1, le=64, description="Keyframes of different streams per detector call."
    )
    id: str | None = Field(default=None, description="Worker id (default: host-port).")
    advertise_url: str | None = Field(
        default=None, description="Signalling URL announced over MQTT (default: host and port)."
    )
    cv_threads: int = Field(
        default=1,
        ge=1,
        le=64,
        description="OpenCV threads for tracking; one per stream thread avoids oversubscription.",
    )
    detector_stall_s: float = Field(
        default=5.0,
        gt=0,
        le=600,
        description="No detection completed this long while detections wait, or only failures "
        "this long: the worker can't detect (/healthz 503, said in its MQTT state).",
    )
    detection_deadline_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="A stream gives up on a detection after a few expected inference waits, "
        "never sooner than this, and detects again.",
    )
    token: str | None = Field(
        default=None,
        min_length=1,
        description="Bearer token every worker route but /healthz requires (env "
        "MOBIEYE_WORKER_TOKEN); edges, the dashboard and the bench send it. Required when the "
        "worker binds beyond loopback.",
    )
    metrics_token: str | None = Field(
        default=None, min_length=1, description="Bearer token for /metrics (none: open)."
    )
    tls: str | None = Field(
        default=None,
        description="Serve signalling over HTTPS: 'self-signed' (made once, kept in the "
        "cache dir; edges pin its fingerprint) or none (plain HTTP).",
        pattern=r"^self-signed$",
    )
    tls_cert: str | None = Field(default=None, description="Certificate (PEM) for HTTPS.")
    tls_key: str | None = Field(default=None, description="Private key (PEM) for HTTPS.")
    max_body_bytes: int = Field(
        default=64 * 1024, ge=1024, le=16 * 1024 * 1024, description="Largest request body."
    )
    connect_timeout_s: float = Field(
        default=10.0, gt=0, le=600, description="Close a session whose ICE isn't connected by then."
    )
    first_frame_timeout_s: float = Field(
        default=10.0, gt=0, le=600, description="Close a session that decoded no frame by then."
    )
    idle_timeout_s: float = Field(
        default=10.0, gt=0, le=3600, description="Close a session that decodes no frame this long."
    )
    max_pixels: int = Field(
        default=1920 * 1080,
        ge=64 * 64,
        le=8192 * 8192,
        description="Largest decoded frame (width x height); larger ones are dropped.",
    )
    max_oversized_frames: int = Field(
        default=5, ge=1, le=10_000, description="Oversized frames before the session is closed."
    )
    max_message_bytes: int = Field(
        default=16 * 1024, ge=256, le=1024 * 1024, description="Largest data-channel message."
    )
    max_still_bytes: int = Field(
        default=63 * 1024,
        ge=1024,
        le=63 * 1024,
        description="Largest keyframe still (edge-first uplink) a peer may send.",
    )
    max_messages_per_s: float = Field(
        default=50.0, gt=0, le=10_000, description="Data-channel messages a peer may send."
    )
    max_buffered_bytes: int = Field(
        default=1024 * 1024,
        ge=16 * 1024,
        description="A peer whose unread data-channel backlog exceeds this is closed.",
    )
    shutdown_timeout_s: float = Field(
        default=5.0, gt=0, le=120, description="After the drain, close everything within this."
    )
    drain_timeout_s: float = Field(
        default=20.0,
        ge=0,
        le=3600,
        description="On SIGTERM or a drain command: stop admitting, tell every edge to move, and "
        "wait this long for them to leave before exiting (0: exit at once). Keep it below the "
        "orchestrator's grace period (Kubernetes terminationGracePeriodSeconds).",
    )


class EdgeConfig(_Section):
    source: str | None = Field(default=None, description="Video file, webcam index or URL.")
    fps: float | None = Field(default=None, gt=0, le=240, description="Pace (default: source).")
    loop: bool = False
    max_width: int | None = Field(default=None, ge=64, description="Downscale wider frames.")
    worker_url: str = "http://127.0.0.1:8000"
    stream_id: str | None = None
    local_model: str | None = Field(
        default=None,
        max_length=4096,
        description="On-device detector, PATH[@IMGSZ] (e.g. the cheapest model in "
        "../shared/data/models @320): boxes for frames whose cloud result is late, and for "
        "every frame while no worker is reachable (start-up, failover, outage, no fleet).",
    )
    local_threads: int = Field(
        default=1, ge=1, le=16, description="CPU threads the on-device model may use."
    )
    uplink: Literal["video", "keyframes"] = Field(
        default="video",
        description="video: every frame as WebRTC video, the worker tracks; keyframes "
        "(edge-first): the edge tracks every frame itself and sends the worker only the frames "
        "it needs detected, as stills over the data channel.",
    )
    still_format: Literal["jpeg", "webp"] = Field(
        default="webp",
        description="Image format of keyframe stills (edge.uplink: keyframes): webp is about "
        "40% smaller than jpeg at the same quality, for ~15 ms more per still.",
    )
    still_max_width: int = Field(
        default=480,
        ge=64,
        le=4096,
        description="Stills wider than this are downscaled (480: at a 100 kbps budget, twice "
        "the stills of 640, which F1 gained more from than from the detail).",
    )
    reconnect_s: float = Field(
        default=1.0, gt=0, description="Wait before reopening a live source (doubles to 10 s)."
    )
    open_timeout_s: float = Field(
        default=30.0, ge=0, le=3600, description="At start, retry a live source this long."
    )
    result_timeout_s: float = Field(
        default=2.0, gt=0, le=600, description="No results this long: the worker is lost."
    )


class FleetConfig(_Section):
    allowed_worker_urls: list[str] = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128", "localhost"],
        description="Advertised worker URLs edges, the phone flow and the dashboard accept: "
        "CIDRs (10.0.0.0/8), host names, or shell patterns on the URL "
        "(https://*.example.com:8443); anything else is ignored and logged.",
        max_length=256,
    )
    ca_file: str | None = Field(
        default=None, description="CA bundle that signed the workers' HTTPS certificates."
    )
    worker_fingerprint: str | None = Field(
        default=None,
        pattern=r"^(sha256:)?[0-9A-Fa-f:]{64,95}$",
        description="SHA-256 of the worker's certificate (pinned; e.g. a self-signed one).",
    )


class MqttConfig(_Section):
    broker: str | None = Field(
        default=None,
        description="mqtt://HOST:PORT or mqtts://HOST:PORT; none: no fleet (the demo starts "
        "an embedded broker on 127.0.0.1).",
        pattern=r"^mqtts?://[^/:]+(:\d+)?/?$",
    )
    prefix: str = Field(default="mobieye", pattern=r"^[A-Za-z0-9_./-]+$", max_length=100)
    username: str | None = None
    password: str | None = None
    ca_file: str | None = Field(default=None, description="CA bundle for mqtts://.")
    keepalive_s: int = Field(default=5, ge=1, le=3600)
    stats_period_s: float = Field(default=1.0, gt=0, le=3600)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MOBIEYE_", env_nested_delimiter="__", extra="forbid"
    )

    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    keyframe: KeyframeConfig = Field(default_factory=KeyframeConfig)
    webrtc: WebRTCConfig = Field(default_factory=WebRTCConfig)
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    edge: EdgeConfig = Field(default_factory=EdgeConfig)
    controller: ControllerConfig = Field(default_factory=ControllerConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    fleet: FleetConfig = Field(default_factory=FleetConfig)
    ladder: list[LadderModel] = Field(
        default_factory=list,
        description="Detectors the controller may choose from (empty: detector.model only).",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_source = InitSettingsSource(settings_cls, init_kwargs=_YAML_DATA.get("data", {}))
        return (init_settings, env_settings, yaml_source)


# The YAML layer for the one load in progress; load_settings fills and clears it.
_YAML_DATA: dict[str, dict[str, Any]] = {}


MAX_CONFIG_BYTES = 1024 * 1024


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:  # bounded: /dev/zero or a video named by mistake
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path} is over {MAX_CONFIG_BYTES // 1024} KiB: not a "
                          "configuration (is it the right file?)")  # fmt: skip
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text: {exc.reason} at byte "
                          f"{exc.start}") from exc  # fmt: skip
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    except RecursionError:
        raise ConfigError(f"config file {path} nests too deeply to be a configuration") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise ConfigError(f"config file {path}: top-level keys must be section names, not "
                          f"{bad[0]!r}")  # fmt: skip
    return data


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def describe_validation_error(exc: ValidationError) -> str:
    return "bad configuration: " + "; ".join(validation_problems(exc, with_input=True))


def load_settings(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> Settings:
    """Build the settings from the layers; raise ConfigError naming every bad value."""
    path = path or os.environ.get("MOBIEYE_CONFIG")
    yaml_data = _read_yaml(Path(path)) if path else {}
    init: dict[str, Any] = {}
    model_env = os.environ.get("MOBIEYE_MODEL")
    if model_env and not os.environ.get("MOBIEYE_DETECTOR__MODEL"):
        init = {"detector": {"model": model_env}}
    token_env = os.environ.get("MOBIEYE_WORKER_TOKEN")
    if token_env and not os.environ.get("MOBIEYE_WORKER__TOKEN"):
        init = _deep_merge(init, {"worker": {"token": token_env}})
    init = _deep_merge(init, overrides or {})
    _YAML_DATA["data"] = yaml_data
    try:
        return Settings(**init)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from exc
    finally:
        _YAML_DATA.pop("data", None)
