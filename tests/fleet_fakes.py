"""The worker and its streams as FleetPresence sees them (mobieye.fleet.presence's
PresentWorker and ServedStream): what tests need to run the real presence code without a
WebRTC session behind it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mobieye.capacity import Admission
from mobieye.fleet.payloads import Command, ObjectEvent, Setting, StreamState, StreamStats


@dataclass
class FakeStream:
    """A served stream: applies a command the way StreamSession does to its Control."""

    stream_id: str
    on_event: Callable[[ObjectEvent], None] | None = None
    keyframe_interval: int = 5
    applied: list[Command] = field(default_factory=list)

    def stream_stats(self, worker_id: str) -> StreamStats:
        return StreamStats(stream=self.stream_id, worker=worker_id, fps=25.0)

    def settings_state(self, worker_id: str, changed: Sequence[Setting] = ()) -> StreamState:
        return StreamState(
            stream=self.stream_id,
            worker=worker_id,
            keyframe_interval=self.keyframe_interval,
            changed=list(changed),
        )

    async def apply_command(self, command: Command, worker_id: str) -> StreamState:
        self.applied.append(command)
        if command.keyframe_interval is not None:
            self.keyframe_interval = command.keyframe_interval
        return self.settings_state(worker_id, ["keyframe_interval"])


@dataclass
class FakeWorker:
    """A ready worker serving ``streams``, with one model and a detector that is fine."""

    worker_id: str
    streams: dict[str, FakeStream]
    ready: bool = True
    draining: bool = False
    drains: list[str] = field(default_factory=list)  # the reasons drain() was called with

    def drain(self, reason: str) -> bool:
        self.drains.append(reason)
        first = not self.draining
        self.draining = True
        return first

    def model_labels(self) -> list[str]:
        return ["yolox_nano"]

    def model_hashes(self) -> dict[str, str]:
        return {"yolox_nano": "0" * 64}

    def detector_busy_s(self) -> float:
        return 0.0

    def detector_problem(self) -> str | None:
        return None

    def admission(self) -> Admission:
        return Admission(admits=8, basis="fixed")
