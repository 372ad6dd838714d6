"""The worker's place in the fleet: its retained state (with a last will), stream stats, object
events, and commands (``.../set``) with the resulting state mirrored on ``.../state``.

Everything goes through ``MqttLink``, which queues while the broker is away and reconnects on
its own: a broker outage never stops a stream. The worker is seen through two small protocols
(:class:`PresentWorker`, :class:`ServedStream`), so the fleet never imports the worker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from mobieye.capacity import Admission
from mobieye.config import Settings
from mobieye.errors import MobiEyeError
from mobieye.fleet import topics
from mobieye.fleet.payloads import (
    Command,
    ObjectEvent,
    Setting,
    StreamState,
    StreamStats,
    WorkerState,
    parse_payload,
)
from mobieye.mqtt.client import MqttLink


class ServedStream(Protocol):
    """A stream as the fleet sees it on its worker."""

    stream_id: str
    on_event: Callable[[ObjectEvent], None] | None

    def stream_stats(self, worker_id: str) -> StreamStats: ...
    def settings_state(self, worker_id: str, changed: Sequence[Setting] = ()) -> StreamState: ...
    async def apply_command(self, command: Command, worker_id: str) -> StreamState: ...


class PresentWorker(Protocol):
    """What the fleet needs of a worker: who it is, what it serves, whether it can detect."""

    worker_id: str

    @property
    def ready(self) -> bool: ...
    @property
    def streams(self) -> Mapping[str, ServedStream]: ...
    def model_labels(self) -> list[str]: ...
    def model_hashes(self) -> dict[str, str]: ...
    def detector_busy_s(self) -> float: ...
    def detector_problem(self) -> str | None: ...
    def admission(self) -> Admission: ...
    @property
    def draining(self) -> bool: ...
    def drain(self, reason: str) -> bool: ...


log = logging.getLogger(__name__)


def advertised_url(settings: Settings) -> str:
    if settings.worker.advertise_url:
        return settings.worker.advertise_url
    host = settings.worker.host
    if host in ("0.0.0.0", "::"):
        host = socket.gethostbyname(socket.gethostname())
    scheme = "https" if settings.worker.tls or settings.worker.tls_cert else "http"
    return f"{scheme}://{host}:{settings.worker.port}"


class FleetPresence:
    def __init__(self, settings: Settings, state: PresentWorker) -> None:
        self.settings = settings
        self.state = state
        self.prefix = settings.mqtt.prefix
        self.worker_id = state.worker_id
        self.url = advertised_url(settings)
        offline = WorkerState.offline(self.worker_id).model_dump_json().encode()
        self._state_topic = topics.worker_state(self.prefix, self.worker_id)
        self.link = MqttLink(
            settings.mqtt, f"mobieye-worker-{self.worker_id}-{os.getpid()}",
            will=(self._state_topic, offline, True),
        )  # fmt: skip
        self._task: asyncio.Task[None] | None = None
        self._busy_before = 0.0
        self._tick_before = time.monotonic()

    async def start(self) -> None:
        await self.link.subscribe(topics.worker_set(self.prefix, self.worker_id), self._on_command)
        await self.link.subscribe(topics.all_stream_sets(self.prefix), self._on_command)
        await self.link.start()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        offline = WorkerState.offline(self.worker_id)
        await self.link.stop(final=[(self._state_topic, offline.model_dump_json().encode(), True)])

    def stream_started(self, session: ServedStream) -> None:
        """Mirror the new stream's settings at once, so the first command has a "before"."""
        session.on_event = self.publish_event
        state = session.settings_state(self.worker_id)
        self.link.publish(topics.stream_state(self.prefix, session.stream_id), state, retain=True)

    def stream_ended(self, stream_id: str) -> None:
        """Clear the stream's retained state, or every reconnect would announce it again."""
        self.link.publish(topics.stream_state(self.prefix, stream_id), b"", retain=True)

    def publish_event(self, event: ObjectEvent) -> None:
        self.link.publish(topics.events(self.prefix), event)

    def _load(self) -> float:
        now = time.monotonic()
        busy = self.state.detector_busy_s()
        span = max(1e-6, now - self._tick_before)
        detector = (busy - self._busy_before) / span
        self._busy_before, self._tick_before = busy, now
        capacity = max(1, self.state.admission().admits)
        return round(max(detector, len(self.state.streams) / capacity), 3)

    def worker_state(self) -> WorkerState:
        room = self.state.admission()
        return WorkerState(
            id=self.worker_id,
            status="online",
            url=self.url,
            models=self.state.model_labels(),
            model_sha256=self.state.model_hashes(),
            capacity=room.admits,
            capacity_basis=room.basis,
            cpu=room.cpu_cores,
            keyframe_stretch=room.keyframe_stretch,
            streams=len(self.state.streams),
            load=self._load(),
            problem=self.state.detector_problem(),
            draining=self.state.draining,
            updated=time.time(),
        )

    async def _run(self) -> None:
        period = self.settings.mqtt.stats_period_s
        while True:
            try:
                self._publish_period()
            except Exception:  # one bad value must not end the worker's presence for good
                log.exception("fleet: publishing this period's state and stats failed")
            await asyncio.sleep(period)

    def publish_state(self) -> None:
        if self.state.ready or self.state.draining:  # announce once streams can be served
            self.link.publish(self._state_topic, self.worker_state(), retain=True)

    def _publish_period(self) -> None:
        self.publish_state()
        for session in list(self.state.streams.values()):
            stats: StreamStats = session.stream_stats(self.worker_id)
            self.link.publish(topics.stream_stats(self.prefix, session.stream_id), stats)

    async def _on_command(self, topic: str, payload: bytes) -> None:
        try:
            command = parse_payload(Command, payload, topic)
        except MobiEyeError as exc:
            log.warning("ignoring command on %s: %s", topic, exc)
            return
        parsed = topics.parse(topic, self.prefix)
        if parsed is None:
            return
        kind, target = parsed.kind, parsed.id
        if command.drain:
            if kind == "worker_set":
                self.state.drain("drain command over MQTT")
            else:
                log.warning("ignoring drain on %s: a drain applies to a worker (%s), not a "
                            "stream", topic, topics.worker_set(self.prefix, "<id>"))  # fmt: skip
            if not command.model_dump(exclude_none=True, exclude={"drain"}):
                return  # a drain alone: nothing for the streams
            command = command.model_copy(update={"drain": None})
        sessions = (
            list(self.state.streams.values())
            if kind == "worker_set"
            else [s for s in self.state.streams.values() if s.stream_id == target]
        )
        for session in sessions:
            applied = await session.apply_command(command, self.worker_id)
            self.link.publish(
                topics.stream_state(self.prefix, session.stream_id), applied, retain=True
            )
        log.info("command on %s applied to %d stream(s): %s", topic, len(sessions),
                 command.model_dump(exclude_none=True))  # fmt: skip
