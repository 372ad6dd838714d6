"""The adaptive controller: hold the latency target (SLA) at the best accuracy it allows.

A pure function of measured inputs, called about once a second by the edge agent:

* **Model** (MDInference): the budget is the SLA minus the network round trip and the worker's
  queueing; pick the most accurate model whose inference time (mean + one standard deviation)
  fits the budget, else the fastest. A switch needs ``confirm`` consecutive agreeing decisions.
* **Stream level** (frame rate, resolution, bitrate cap, the keyframe policy's longest
  interval): step to a cheaper level when the measured p95 latency breaks the SLA because of
  congestion (the round trip grows over its recent minimum) or the worker (its queue grows,
  it skips frames), or results go missing at an overloaded worker; hold when the tail comes
  from random loss (round trip flat); step back up when there is ample headroom. A level
  is held at least ``min_dwell_s`` (twice that before stepping up) so the
  stream does not flap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from mobieye.config import ControllerConfig
from mobieye.messages import ModelInfo

HEADROOM = 0.5  # step up only when p95 is under half the SLA
# Queueing delay (RTT over its recent minimum) that means the link is congested: this many ms
# or this share of the SLA, whichever is more; the worker's own queue, this share of the SLA.
CONGESTION_MS = 20.0
CONGESTION_SHARE = 0.15
WORKER_QUEUE_SHARE = 0.2
MIN_RESULT_RATIO = 0.9  # fewer results than this in a period may mean overload...
MAX_WORKER_DROP = 0.05  # ...when the worker skips at least this share of the frames it decodes
START_SHARE = 0.7  # of the detector's time the streams' starting models may fill together


@dataclass(frozen=True)
class Level:
    fps: float
    max_width: int
    bitrate_kbps: int
    max_keyframe_interval: int  # cheaper levels let the worker detect less often


# Best first. Detection needs little bitrate (AccMPEG, AWStream): level 0 is already frugal.
DEFAULT_LEVELS: tuple[Level, ...] = (
    Level(30, 640, 350, 12),
    Level(30, 480, 250, 14),
    Level(20, 480, 200, 16),
    Level(15, 416, 150, 20),
    Level(10, 320, 100, 24),
)


@dataclass(frozen=True)
class Observation:
    now_s: float
    latency_p95_ms: float | None  # capture to result, over the last period
    result_ratio: float  # frames with a result / frames sent, over the last period
    rtt_ms: float | None = None
    rtt_min_ms: float | None = None  # the lowest round trip lately: the link without queues
    queue_ms: float = 0.0  # the worker's decoded-to-processed wait
    worker_drop_ratio: float | None = None  # frames the worker skipped; None: not reported
    uplink_kbps: float | None = None
    models: tuple[ModelInfo, ...] = ()


@dataclass(frozen=True)
class ControllerState:
    level: int = 0
    model: str | None = None
    candidate: str | None = None
    candidate_count: int = 0
    # The first decision starts the dwell clock: start-up (ICE, first keyframe) is not load.
    last_level_change_s: float | None = None


@dataclass(frozen=True)
class LevelDecision:
    level_index: int
    level: Level
    model: str | None
    budget_ms: float
    reason: str
    changed: bool
    inputs: Observation = field(repr=False)
    cause: str | None = None  # why p95 was over the SLA (latency_cause), when it was


def choose_model(models: Sequence[ModelInfo], budget_ms: float) -> ModelInfo | None:
    """MDInference: the most accurate model that fits the budget, else the fastest."""
    if not models:
        return None
    fits = [m for m in models if m.mean_ms + m.std_ms <= budget_ms]
    if fits:
        return max(fits, key=lambda m: (m.accuracy, -m.mean_ms))
    return min(models, key=lambda m: m.mean_ms)


def starting_model(
    models: Sequence[ModelInfo], streams: int, detections_per_s: float, share: float = START_SHARE
) -> ModelInfo | None:
    """The model a stream starts on, before its edge's controller has chosen: the most accurate
    one whose detections, for every stream the worker now serves, fill at most ``share`` of
    the one inference thread's time; else the fastest. (Starting four streams on the heaviest
    model overloaded the worker for their first seconds: boxes a second old.)"""
    if not models:
        return None
    load_per_ms = max(streams, 1) * max(detections_per_s, 0.0) / 1000  # detections per ms
    fits = [m for m in models if m.mean_ms * load_per_ms <= share]
    if fits:
        return max(fits, key=lambda m: (m.accuracy, -m.mean_ms))
    return min(models, key=lambda m: m.mean_ms)


def latency_cause(cfg: ControllerConfig, obs: Observation) -> str:
    """Why p95 is over the SLA: ``congestion`` (queues on the link grow: fewer bits help),
    ``worker`` (its queue grows or it skips frames: fewer frames help), or ``loss`` (neither:
    random loss, whose retransmissions and recovery keyframes make the tail; fewer bits don't
    bring lost packets back, and a cheaper level only costs accuracy). Without an RTT
    measurement it can't tell, and answers ``congestion``."""
    if obs.queue_ms > WORKER_QUEUE_SHARE * cfg.sla_ms or (
        obs.worker_drop_ratio is not None and obs.worker_drop_ratio >= MAX_WORKER_DROP
    ):
        return "worker"
    if obs.rtt_ms is None or obs.rtt_min_ms is None:
        return "congestion"
    queueing = obs.rtt_ms - obs.rtt_min_ms
    return "congestion" if queueing > max(CONGESTION_MS, CONGESTION_SHARE * cfg.sla_ms) else "loss"


def decide_level(
    cfg: ControllerConfig,
    state: ControllerState,
    obs: Observation,
    levels: Sequence[Level] = DEFAULT_LEVELS,
) -> tuple[ControllerState, LevelDecision]:
    reasons: list[str] = []
    budget = cfg.sla_ms - (obs.rtt_ms or 0.0) - obs.queue_ms

    # Model, with confirmation before a switch.
    model, candidate, count = state.model, state.candidate, state.candidate_count
    wanted = choose_model(obs.models, budget)
    if wanted is not None and wanted.label != model:
        count = count + 1 if candidate == wanted.label else 1
        candidate = wanted.label
        if model is None or count >= cfg.confirm:
            reasons.append(f"model {model} -> {wanted.label} (budget {budget:.0f} ms)")
            model, candidate, count = wanted.label, None, 0
    else:
        candidate, count = None, 0

    # Stream level, with dwell times.
    level = state.level
    last_change = obs.now_s if state.last_level_change_s is None else state.last_level_change_s
    since = obs.now_s - last_change
    p95 = obs.latency_p95_ms
    # Missing results mean overload when the worker says it is skipping frames (or can't
    # say); otherwise they were lost on the way (packet loss, keyframe recovery), and sending
    # fewer frames would only cost accuracy.
    worker_skips = obs.worker_drop_ratio is None or obs.worker_drop_ratio >= MAX_WORKER_DROP
    starved = obs.result_ratio < MIN_RESULT_RATIO and worker_skips
    over = p95 is not None and p95 > cfg.sla_ms
    cause = latency_cause(cfg, obs) if over else None
    overloaded = (over and cause != "loss") or starved
    if overloaded and level < len(levels) - 1 and since >= cfg.min_dwell_s:
        level, last_change = level + 1, obs.now_s
        shown = "none" if p95 is None else f"{p95:.0f} ms"
        skipped = "" if obs.worker_drop_ratio is None else f", skipped {obs.worker_drop_ratio:.0%}"
        why = f" ({cause})" if cause else ""
        reasons.append(
            f"down to level {level}: p95 {shown}{why}, results {obs.result_ratio:.0%}{skipped}"
        )
    elif (
        not overloaded
        and not over
        and level > 0
        and p95 is not None
        and p95 < HEADROOM * cfg.sla_ms
        and since >= 2 * cfg.min_dwell_s
    ):
        level, last_change = level - 1, obs.now_s
        reasons.append(f"up to level {level}: p95 {p95:.0f} ms has headroom")

    new_state = ControllerState(level, model, candidate, count, last_change)
    decision = LevelDecision(
        level_index=level,
        level=levels[level],
        model=model,
        budget_ms=round(budget, 1),
        reason="; ".join(reasons) or "hold",
        changed=bool(reasons),
        inputs=obs,
        cause=cause,
    )
    return new_state, decision
