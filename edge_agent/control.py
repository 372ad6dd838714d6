"""Runs the adaptive controller on the edge: gathers its inputs, applies its outputs.

Inputs, all measured: capture-to-result latency and the share of frames answered (this agent),
round-trip time and bytes sent (the WebRTC sender's stats), the worker's queueing and each
model's inference time (the worker's stats messages). Outputs: frame rate and resolution (the
capture), bitrate cap (the encoder), model and keyframe interval (sent to the worker).
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from aiortc import RTCPeerConnection

from edge_agent.replay import ReplaySource
from edge_agent.sources import VideoSource
from mobieye.config import ControllerConfig, WebRTCConfig
from mobieye.controller import (
    DEFAULT_LEVELS,
    ControllerState,
    LevelDecision,
    Observation,
    decide_level,
)
from mobieye.messages import Control, ModelInfo, WorkerStats, encode
from mobieye.stats import percentile
from mobieye.webrtc import set_bitrate_limits

log = logging.getLogger(__name__)

KEEP_DECISIONS = 600
RTT_WINDOW_S = 30.0  # the link's base round trip is the lowest seen this long


class EdgeController:
    def __init__(
        self,
        cfg: ControllerConfig,
        webrtc: WebRTCConfig,
        source: VideoSource | ReplaySource,
        send: Callable[[str], None],
    ) -> None:
        self.cfg = cfg
        self.webrtc = webrtc
        self.source = source
        # A replayed clip's rate, size and bitrate are fixed: only the model is chosen.
        self.levels = DEFAULT_LEVELS[:1] if isinstance(source, ReplaySource) else DEFAULT_LEVELS
        self.send = send
        self.state = ControllerState()
        self.models: tuple[ModelInfo, ...] = ()
        self.queue_ms = 0.0
        self.worker_drop_ratio: float | None = None
        self.decisions: deque[dict[str, Any]] = deque(maxlen=KEEP_DECISIONS)
        self.changes = 0
        self._latencies: list[float] = []
        self._sent = 0
        self._answered = 0
        self._bytes = 0
        self._last_tick_s: float | None = None
        self._rtts: deque[tuple[float, float]] = deque()  # (when, RTT ms) over RTT_WINDOW_S

    # -- inputs --------------------------------------------------------------------------------
    def on_models(self, models: list[ModelInfo]) -> None:
        self.models = tuple(models)

    def on_welcome(self, worker_id: str) -> None:
        """A worker took the stream: after a failover, tell it what is in force already (the
        new worker starts from its defaults; the controller only sends changes)."""
        if self.state.model is None and self.state.level == 0:
            return  # nothing decided yet: the first decision will say it
        reason = f"resumed at level {self.state.level} on worker {worker_id}"
        self._tell_worker(self.state.level, self.state.model, reason)

    def on_worker_stats(self, stats: WorkerStats) -> None:
        self.models = tuple(stats.models)
        self.queue_ms = stats.queue_ms
        self.worker_drop_ratio = stats.dropped_ratio

    def on_sent(self) -> None:
        self._sent += 1

    def on_result(self, latency_ms: float) -> None:
        self._answered += 1
        self._latencies.append(latency_ms)

    # -- one decision --------------------------------------------------------------------------
    async def tick(self, now_s: float, pc: RTCPeerConnection) -> LevelDecision | None:
        rtt_ms, sent_bytes = await _sender_stats(pc)
        period = now_s - self._last_tick_s if self._last_tick_s is not None else None
        self._last_tick_s = now_s
        uplink = None
        if period and sent_bytes is not None:
            uplink = (sent_bytes - self._bytes) * 8 / 1000 / period
            self._bytes = sent_bytes
        if self._sent == 0:
            return None  # nothing measured yet
        if rtt_ms is not None:
            self._rtts.append((now_s, rtt_ms))
        while self._rtts and now_s - self._rtts[0][0] > RTT_WINDOW_S:
            self._rtts.popleft()
        obs = Observation(
            now_s=now_s,
            latency_p95_ms=percentile(self._latencies, 95),
            result_ratio=min(1.0, self._answered / self._sent),
            rtt_ms=rtt_ms,
            rtt_min_ms=min((r for _, r in self._rtts), default=None),
            queue_ms=self.queue_ms,
            worker_drop_ratio=self.worker_drop_ratio,
            uplink_kbps=uplink,
            models=self.models,
        )
        self._latencies, self._sent, self._answered = [], 0, 0
        previous = self.state
        self.state, decision = decide_level(self.cfg, self.state, obs, self.levels)
        self._record(decision)
        if decision.changed:
            self.changes += 1
            log.info("controller: %s", decision.reason)
            self.apply(decision, model_changed=decision.model != previous.model)
        return decision

    def apply(self, decision: LevelDecision, model_changed: bool) -> None:
        """Set capture rate, size and bitrate cap here; tell the worker (model, for metrics)."""
        level = decision.level
        self.source.target_fps = min(level.fps, self.source.fps)
        self.source.max_width = level.max_width
        set_bitrate_limits(
            min(self.webrtc.min_bitrate_kbps, level.bitrate_kbps) * 1000,
            level.bitrate_kbps * 1000,
        )
        model = decision.model if model_changed else None
        self._tell_worker(decision.level_index, model, decision.reason)

    def _tell_worker(self, level_index: int, model: str | None, reason: str) -> None:
        """The level (and model, when given) in force, for the worker to apply and export."""
        level = self.levels[level_index]
        control = Control(
            model=model,
            level=level_index,
            fps=min(level.fps, self.source.fps),  # never above the source's own rate
            max_width=level.max_width,
            bitrate_kbps=level.bitrate_kbps,
            max_keyframe_interval=level.max_keyframe_interval,
            reason=reason,
        )
        self.send(encode(control))

    def _record(self, d: LevelDecision) -> None:
        obs = d.inputs
        self.decisions.append(
            {
                "t": round(obs.now_s, 3),
                "level": d.level_index,
                **asdict(d.level),
                "model": d.model,
                "budget_ms": d.budget_ms,
                "reason": d.reason,
                "p95_ms": obs.latency_p95_ms,
                "result_ratio": round(obs.result_ratio, 3),
                "rtt_ms": obs.rtt_ms,
                "rtt_min_ms": obs.rtt_min_ms,
                "cause": d.cause,
                "queue_ms": obs.queue_ms,
                "worker_drop_ratio": obs.worker_drop_ratio,
                "uplink_kbps": round(obs.uplink_kbps, 1) if obs.uplink_kbps else None,
            }
        )


async def _sender_stats(pc: RTCPeerConnection) -> tuple[float | None, int | None]:
    """(round-trip time in ms from RTCP, bytes sent) of the video sender."""
    rtt, sent = None, None
    for sender in pc.getSenders():
        with contextlib.suppress(Exception):
            for s in (await sender.getStats()).values():
                kind = getattr(s, "type", "")
                if kind == "remote-inbound-rtp" and getattr(s, "roundTripTime", None):
                    rtt = float(s.roundTripTime) * 1000
                elif kind == "outbound-rtp":
                    sent = (sent or 0) + int(getattr(s, "bytesSent", 0) or 0)
    return rtt, sent
