"""FleetStore: the dashboard's picture of the fleet, built from MQTT messages alone (no I/O).

Everything is bounded: events in a drop-oldest ring, each stream's chart series in another, and
streams that stay silent are first marked stale, then forgotten. Handlers and readers run in
the one event loop, so no locking is needed.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass

from mobieye.clock import TimeSource
from mobieye.config import FleetConfig
from mobieye.dashboard.views import (
    STALE_BOX_AGE_FRAMES,
    SeriesPoint,
    StreamView,
    TimelineEntry,
    WorkerView,
)
from mobieye.errors import MobiEyeError
from mobieye.fleet import topics
from mobieye.fleet.allowlist import UrlAllowlist
from mobieye.fleet.payloads import ObjectEvent, StreamState, StreamStats, WorkerState, parse_payload

log = logging.getLogger(__name__)


@dataclass
class _Worker:
    state: WorkerState
    last_seen: float


@dataclass
class _Stream:
    id: str
    last_seen: float
    series: deque[SeriesPoint]
    timeline: deque[TimelineEntry]
    stats: StreamStats | None = None
    state: StreamState | None = None

    @property
    def worker(self) -> str:
        # Stats say who serves the stream now; a retained state may predate a failover.
        if self.stats is not None:
            return self.stats.worker
        assert self.state is not None  # a stream exists only once one of them arrived
        return self.state.worker


@dataclass
class _Ended:
    stream: _Stream
    worker: str
    at: float


@dataclass
class Counters:
    messages: int = 0
    malformed: int = 0
    ignored: int = 0
    last_malformed: str | None = None  # the newest reason, for /api/status
    untrusted: int = 0  # worker states whose URL fleet.allowed_worker_urls refuses
    last_untrusted: str | None = None


class FleetStore:
    """Latest worker states, stream stats and states, recent object events, chart series and
    each stream's timeline (controller steps, failovers, operators' settings).

    A stream that ends on one worker and reappears on another within ``resume_after_s`` is
    the same stream failing over: it keeps its series and timeline, and the failover is noted.
    """

    def __init__(
        self,
        prefix: str | None = None,
        *,
        stale_after_s: float = 5.0,
        forget_after_s: float = 600.0,
        max_events: int = 500,
        max_points: int = 300,
        max_timeline: int = 200,
        resume_after_s: float = 120.0,
        clock: TimeSource = time.time,
        allowlist: UrlAllowlist | None = None,
        max_workers: int = 1000,
        max_streams: int = 10_000,
    ) -> None:
        self.prefix = prefix
        # A worker advertising a URL outside this is not shown, and never proxied to.
        self.allowlist = allowlist or UrlAllowlist(FleetConfig().allowed_worker_urls)
        # Anyone who may publish could invent ids without end: the store holds at most these.
        self.max_workers = max_workers
        self.max_streams = max_streams
        self.stale_after_s = stale_after_s
        self.forget_after_s = forget_after_s
        self.max_points = max_points
        self.max_events = max_events
        self.max_timeline = max_timeline
        self.resume_after_s = max(resume_after_s, stale_after_s)
        self.clock = clock
        self.counters = Counters()
        self._workers: dict[str, _Worker] = {}
        self._streams: dict[str, _Stream] = {}
        self._events: deque[ObjectEvent] = deque(maxlen=max_events)
        # Ended streams, kept a while: stats their worker sent just before it ended one would
        # otherwise bring it back as a ghost, and another worker's stats mean a failover.
        self._ended: dict[str, _Ended] = {}

    # -- input ------------------------------------------------------------------------------

    def on_message(self, topic: str, payload: bytes) -> bool:
        """Take one message; False if it was ignored (foreign topic, bad or late payload)."""
        self.counters.messages += 1
        parsed = topics.parse(topic, self.prefix)
        if parsed is None or parsed.kind in ("worker_set", "stream_set"):
            self.counters.ignored += 1
            return False
        now = self.clock()
        try:
            if parsed.kind == "events":
                self._events.append(parse_payload(ObjectEvent, payload, topic))
                return True
            assert parsed.id is not None  # every kind but events names its worker or stream
            if parsed.kind == "worker_state":
                return self._on_worker_state(parsed.id, payload, topic, now)
            if parsed.kind == "stream_state":
                return self._on_stream_state(parsed.id, payload, topic, now)
            return self._on_stream_stats(parsed.id, payload, topic, now)
        except MobiEyeError as exc:
            self.counters.malformed += 1
            self.counters.last_malformed = str(exc)
            return False

    def _on_worker_state(self, wid: str, payload: bytes, topic: str, now: float) -> bool:
        if not payload:  # retained state cleared: the worker is gone for good
            return self._workers.pop(wid, None) is not None
        state = parse_payload(WorkerState, payload, topic)
        _same_id(state.id, wid, topic)
        refused = self.allowlist.why_not(state.url) if state.url else None
        if refused is not None:
            self.counters.untrusted += 1
            if self.counters.last_untrusted != refused:
                log.warning("ignoring worker %s: %s", wid, refused)
            self.counters.last_untrusted = refused
            self._workers.pop(wid, None)
            return False
        if wid not in self._workers and len(self._workers) >= self.max_workers:
            self.counters.ignored += 1
            return False
        self._workers[wid] = _Worker(state, now)
        return True

    def _on_stream_state(self, sid: str, payload: bytes, topic: str, now: float) -> bool:
        if not payload:  # the worker clears the retained state when the stream ends
            return self._end(sid, now)
        state = parse_payload(StreamState, payload, topic)
        _same_id(state.stream, sid, topic)
        if state.status == "ended":
            return self._end(sid, now)
        stream = self._stream(sid, now)
        change = _settings_change(stream.state, state)
        if change:
            stream.timeline.append(TimelineEntry(t=now, kind="settings", text=change))
        stream.state, stream.last_seen = state, now
        return True

    def _on_stream_stats(self, sid: str, payload: bytes, topic: str, now: float) -> bool:
        stats = parse_payload(StreamStats, payload, topic)
        _same_id(stats.stream, sid, topic)
        ended = self._ended.pop(sid, None)
        if ended is not None:
            if ended.worker == stats.worker and now - ended.at < self.stale_after_s:
                self._ended[sid] = ended  # a ghost of the ended stream: keep waiting
                self.counters.ignored += 1
                return False
            if now - ended.at < self.resume_after_s:
                self._streams.setdefault(sid, ended.stream)  # failing over: carry on
        stream = self._stream(sid, now)
        previous = stream.stats
        stream.stats, stream.last_seen = stats, now
        self._note_failover(stream, previous, stats, now)
        for d in stats.decisions:
            text = d.reason or f"level {d.level}"
            stream.timeline.append(TimelineEntry(t=d.at, kind="decision", text=text, level=d.level))
        lat, ctl = stats.latency_ms, stats.controller
        stream.series.append(
            SeriesPoint(
                t=now,
                fps=stats.fps,
                p50_ms=lat.p50 if lat is not None else None,
                p95_ms=lat.p95 if lat is not None else None,
                detector_fraction=stats.detector_fraction,
                box_age_p95=stats.box_age_frames.p95 if stats.box_age_frames else None,
                uplink_kbps=stats.uplink_kbps,
                target_fps=ctl.fps if ctl is not None else None,
                bitrate_kbps=ctl.bitrate_kbps if ctl is not None else None,
                level=ctl.level if ctl is not None else None,
                model=stats.model,
                keyframe_interval=stats.keyframe_interval,
                worker=stats.worker,
            )
        )
        return True

    def _note_failover(
        self, stream: _Stream, previous: StreamStats | None, stats: StreamStats, now: float
    ) -> None:
        """A new worker, or the edge counting one more failover (it may have come back to the
        same worker, or the dashboard missed the stats in between)."""
        if previous is None:
            return
        moved = previous.worker != stats.worker
        if not moved and stats.failovers <= previous.failovers:
            return
        lost = stats.previous_worker or previous.worker
        count = f" {stats.failovers}" if stats.failovers else ""
        text = f"failover{count}: {lost} \u2192 {stats.worker}"
        stream.timeline.append(
            TimelineEntry(t=now, kind="failover", text=text, worker=stats.worker, from_worker=lost)
        )

    def _stream(self, sid: str, now: float) -> _Stream:
        stream = self._streams.get(sid)
        if stream is None:
            if len(self._streams) >= self.max_streams:
                raise MobiEyeError(f"stream {sid}: already {self.max_streams} streams shown")
            stream = _Stream(
                sid, now, deque(maxlen=self.max_points), deque(maxlen=self.max_timeline)
            )
            self._streams[sid] = stream
        return stream

    def _end(self, sid: str, now: float) -> bool:
        stream = self._streams.pop(sid, None)
        if stream is None:
            return False
        self._ended[sid] = _Ended(stream, stream.worker, now)
        return True

    # -- output -----------------------------------------------------------------------------

    def prune(self) -> None:
        """Forget streams silent for ``forget_after_s`` (their worker died without ending
        them) and end markers that can no longer matter."""
        now = self.clock()
        for sid in [s for s, v in self._streams.items() if now - v.last_seen > self.forget_after_s]:
            del self._streams[sid]
        for sid in [s for s, e in self._ended.items() if now - e.at >= self.resume_after_s]:
            del self._ended[sid]

    def workers(self) -> list[WorkerView]:
        now = self.clock()
        return [self._worker_view(w, now) for _, w in sorted(self._workers.items())]

    def worker(self, wid: str) -> WorkerView | None:
        w = self._workers.get(wid)
        return self._worker_view(w, self.clock()) if w is not None else None

    def streams(self) -> list[StreamView]:
        self.prune()
        now = self.clock()
        return [self._stream_view(s, now) for _, s in sorted(self._streams.items())]

    def stream(self, sid: str) -> StreamView | None:
        self.prune()
        s = self._streams.get(sid)
        return self._stream_view(s, self.clock()) if s is not None else None

    def series(self, sid: str) -> list[SeriesPoint] | None:
        s = self._streams.get(sid)
        return list(s.series) if s is not None else None

    def timeline(self, sid: str) -> list[TimelineEntry] | None:
        s = self._streams.get(sid)
        return sorted(s.timeline, key=lambda e: e.t) if s is not None else None

    def events(self, limit: int | None = None, stream: str | None = None) -> list[ObjectEvent]:
        """The newest events first, at most ``limit``, of one stream if given."""
        out: list[ObjectEvent] = []
        for event in reversed(self._events):
            if limit is not None and len(out) >= limit:
                break
            if stream is None or event.stream == stream:
                out.append(event)
        return out

    def _worker_view(self, w: _Worker, now: float) -> WorkerView:
        # An "online" worker republishes its state every stats period; silence means trouble
        # its last will has not (yet) reported.
        stale = w.state.status == "online" and now - w.last_seen > self.stale_after_s
        return WorkerView(**w.state.model_dump(), last_seen=w.last_seen, stale=stale)

    def _stream_view(self, s: _Stream, now: float) -> StreamView:
        stats, state = s.stats, s.state
        ctl = stats.controller if stats is not None else None
        worker = self._workers.get(s.worker)
        worker_status = worker.state.status if worker is not None else None
        # Stats carry what is in force now; the retained state fills in before the first stats.
        model = stats.model if stats is not None else None
        interval = stats.keyframe_interval if stats is not None else None
        if state is not None:
            model = model or state.model
            interval = interval or state.keyframe_interval
        age = stats.box_age_frames if stats is not None else None
        return StreamView(
            id=s.id,
            worker=s.worker,
            worker_status=worker_status,
            fps=stats.fps if stats is not None else None,
            latency_ms=stats.latency_ms if stats is not None else None,
            model=model,
            keyframe_interval=interval,
            detector_fraction=stats.detector_fraction if stats is not None else None,
            box_age_frames=age,
            boxes_stale=age is not None and age.p95 > STALE_BOX_AGE_FRAMES,
            uplink_kbps=stats.uplink_kbps if stats is not None else None,
            damaged_frames=stats.damaged_frames if stats is not None else None,
            sla_ms=state.sla_ms if state is not None else None,
            level=ctl.level if ctl is not None else None,
            target_fps=ctl.fps if ctl is not None else None,
            bitrate_kbps=ctl.bitrate_kbps if ctl is not None else None,
            failovers=stats.failovers if stats is not None else None,
            last_seen=s.last_seen,
            stale=now - s.last_seen > self.stale_after_s or worker_status == "offline",
        )


def _settings_change(before: StreamState | None, after: StreamState) -> str:
    """What an operator's command changed, e.g. "SLA 100 \u2192 50 ms"; "" when none did.

    Only the fields the command set count: the keyframe interval also moves by itself (the
    policy tunes it), and that is no operator's doing."""
    if before is None:
        return ""
    parts = []
    if "sla_ms" in after.changed and before.sla_ms != after.sla_ms:
        parts.append(f"SLA {_num(before.sla_ms)} \u2192 {_num(after.sla_ms)} ms")
    if "model" in after.changed and before.model != after.model:
        parts.append(f"model {before.model} \u2192 {after.model}")
    if "keyframe_interval" in after.changed and before.keyframe_interval != after.keyframe_interval:
        before_k, after_k = before.keyframe_interval, after.keyframe_interval
        parts.append(f"keyframe interval {before_k} \u2192 {after_k}")
    return "; ".join(parts)


def _num(v: float | None) -> str:
    return "?" if v is None else f"{v:g}"


def _same_id(inside: str, in_topic: str, topic: str) -> None:
    # A payload that names another worker or stream than its topic would corrupt the picture.
    if inside != in_topic:
        raise MobiEyeError(f"payload on {topic} names {inside!r}, not {in_topic!r}")
