"""Everything one worker process holds: its settings and models, the detector pool (once
loaded), the live streams and their viewers, its metrics and its place in the fleet. The routes
reach it as ``request.app.state.worker``; the fleet sees it as a ``PresentWorker``."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from cloud_worker.detector_health import detector_problem
from cloud_worker.detector_pool import DetectorPool
from cloud_worker.drain import Drainer
from cloud_worker.load import WorkerLoad
from cloud_worker.metrics import WorkerMetrics
from cloud_worker.session import StreamSession
from cloud_worker.viewers import ViewerHub
from mobieye.capacity import Admission
from mobieye.config import Settings
from mobieye.detector import Detector
from mobieye.fleet.presence import FleetPresence


@dataclass
class WorkerContext:
    settings: Settings
    detectors: dict[str, tuple[Detector, float]]  # label -> (detector, declared accuracy)
    worker_id: str
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)
    pool: DetectorPool | None = None
    load: WorkerLoad | None = None  # with the pool
    load_error: str | None = None
    sessions: dict[str, StreamSession] = field(default_factory=dict)
    recent: deque[dict[str, object]] = field(default_factory=lambda: deque(maxlen=32))
    fleet: FleetPresence | None = None
    viewers: ViewerHub = field(init=False)
    drainer: Drainer | None = None  # made by the app
    _counter: int = 0

    def __post_init__(self) -> None:
        self.viewers = ViewerHub(self.settings)

    @property
    def ready(self) -> bool:
        return self.pool is not None

    @property
    def streams(self) -> dict[str, StreamSession]:
        return self.sessions

    @property
    def draining(self) -> bool:
        return self.drainer is not None and self.drainer.draining

    def drain(self, reason: str) -> bool:
        """Stop admitting, move the streams away, then exit; False if already draining."""
        return self.drainer.start(reason) if self.drainer is not None else False

    def admits(self) -> int:
        """Streams this worker takes now (0 until its models are loaded, or once draining)."""
        if self.draining:
            return 0
        return self.load.admits() if self.load is not None else 0

    def admission(self) -> Admission:
        return self.load.admission() if self.load is not None else Admission(0, None)

    def model_labels(self) -> list[str]:
        return list(self.detectors)

    def model_hashes(self) -> dict[str, str]:
        """label -> SHA-256 of each model served (once loaded)."""
        out = {}
        for label, (detector, _) in self.detectors.items():
            digest = getattr(detector, "sha256", None)  # stock names downloaded have none
            if isinstance(digest, str):
                out[label] = digest
        return out

    def detector_busy_s(self) -> float:
        """Wall time spent inside the detectors so far (0 while loading)."""
        return self.pool.busy_s if self.pool is not None else 0.0

    def detector_problem(self) -> str | None:
        """Why this worker can't detect now (None: it can, or it is still loading)."""
        if self.pool is None:
            return None
        return detector_problem(self.pool.facts(), self.settings.worker.detector_stall_s)

    def forget(self, session: StreamSession) -> None:
        self.sessions.pop(session.stream_id, None)
        self.recent.append(session.summary())
        if self.fleet is not None:
            self.fleet.stream_ended(session.stream_id)
        if self.drainer is not None:
            self.drainer.stream_left()

    def new_stream_id(self, wanted: str | None) -> str:
        self._counter += 1
        base = wanted or f"stream-{self._counter}"
        sid, n = base, 1
        while sid in self.sessions:
            n += 1
            sid = f"{base}-{n}"
        return sid
