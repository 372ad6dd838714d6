"""FleetStore: the dashboard's picture of the fleet, built from MQTT messages alone (no I/O).

Everything is bounded: events in a drop-oldest ring, each stream's chart series in another, and
streams that stay silent are first marked stale, then forgotten. Handlers and readers run in
the one event loop, so no locking is needed.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from mobieye.dashboard.views import SeriesPoint, StreamView, WorkerView
from mobieye.errors import MobiEyeError
from mobieye.mqtt import ObjectEvent, StreamState, StreamStats, WorkerState, parse_payload, topics

Clock = Callable[[], float]


@dataclass
class _Worker:
    state: WorkerState
    last_seen: float


@dataclass
class _Stream:
    id: str
    last_seen: float
    series: deque[SeriesPoint]
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
class Counters:
    messages: int = 0
    malformed: int = 0
    ignored: int = 0
    last_malformed: str | None = None  # the newest reason, for /api/status


class FleetStore:
    """Latest worker states, stream stats and states, recent object events, chart series."""

    def __init__(
        self,
        prefix: str | None = None,
        *,
        stale_after_s: float = 5.0,
        forget_after_s: float = 600.0,
        max_events: int = 500,
        max_points: int = 300,
        clock: Clock = time.time,
    ) -> None:
        self.prefix = prefix
        self.stale_after_s = stale_after_s
        self.forget_after_s = forget_after_s
        self.max_points = max_points
        self.max_events = max_events
        self.clock = clock
        self.counters = Counters()
        self._workers: dict[str, _Worker] = {}
        self._streams: dict[str, _Stream] = {}
        self._events: deque[ObjectEvent] = deque(maxlen=max_events)
        # stream -> (worker, when): stats the worker sent just before it ended the stream
        # would otherwise bring it back as a ghost.
        self._ended: dict[str, tuple[str, float]] = {}

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
        stream.state, stream.last_seen = state, now
        return True

    def _on_stream_stats(self, sid: str, payload: bytes, topic: str, now: float) -> bool:
        stats = parse_payload(StreamStats, payload, topic)
        _same_id(stats.stream, sid, topic)
        ended = self._ended.get(sid)
        if ended is not None and ended[0] == stats.worker and now - ended[1] < self.stale_after_s:
            self.counters.ignored += 1
            return False
        self._ended.pop(sid, None)
        stream = self._stream(sid, now)
        stream.stats, stream.last_seen = stats, now
        lat = stats.latency_ms
        stream.series.append(
            SeriesPoint(
                t=now,
                fps=stats.fps,
                p50_ms=lat.p50 if lat is not None else None,
                p95_ms=lat.p95 if lat is not None else None,
                detector_fraction=stats.detector_fraction,
            )
        )
        return True

    def _stream(self, sid: str, now: float) -> _Stream:
        stream = self._streams.get(sid)
        if stream is None:
            stream = _Stream(sid, now, deque(maxlen=self.max_points))
            self._streams[sid] = stream
        return stream

    def _end(self, sid: str, now: float) -> bool:
        stream = self._streams.pop(sid, None)
        if stream is None:
            return False
        self._ended[sid] = (stream.worker, now)
        return True

    # -- output -----------------------------------------------------------------------------

    def prune(self) -> None:
        """Forget streams silent for ``forget_after_s`` (their worker died without ending
        them) and end markers that can no longer matter."""
        now = self.clock()
        for sid in [s for s, v in self._streams.items() if now - v.last_seen > self.forget_after_s]:
            del self._streams[sid]
        for sid in [s for s, (_, at) in self._ended.items() if now - at >= self.stale_after_s]:
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
        worker = self._workers.get(s.worker)
        worker_status = worker.state.status if worker is not None else None
        # Stats carry what is in force now; the retained state fills in before the first stats.
        model = stats.model if stats is not None else None
        interval = stats.keyframe_interval if stats is not None else None
        if state is not None:
            model = model or state.model
            interval = interval or state.keyframe_interval
        return StreamView(
            id=s.id,
            worker=s.worker,
            worker_status=worker_status,
            fps=stats.fps if stats is not None else None,
            latency_ms=stats.latency_ms if stats is not None else None,
            model=model,
            keyframe_interval=interval,
            detector_fraction=stats.detector_fraction if stats is not None else None,
            uplink_kbps=stats.uplink_kbps if stats is not None else None,
            damaged_frames=stats.damaged_frames if stats is not None else None,
            sla_ms=state.sla_ms if state is not None else None,
            last_seen=s.last_seen,
            stale=now - s.last_seen > self.stale_after_s or worker_status == "offline",
        )


def _same_id(inside: str, in_topic: str, topic: str) -> None:
    # A payload that names another worker or stream than its topic would corrupt the picture.
    if inside != in_topic:
        raise MobiEyeError(f"payload on {topic} names {inside!r}, not {in_topic!r}")
