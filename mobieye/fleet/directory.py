"""The live workers of the fleet, as their retained MQTT states announce them.

An agent started with ``--worker auto`` asks the directory for candidates: online workers with
free capacity, least loaded first. A state that doesn't parse is logged and skipped; a worker
whose last will arrives is offline at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time

from mobieye.config import FleetConfig, MqttConfig
from mobieye.errors import MobiEyeError
from mobieye.fleet import topics
from mobieye.fleet.allowlist import UrlAllowlist
from mobieye.fleet.payloads import WorkerState, parse_payload
from mobieye.mqtt.client import MqttLink

log = logging.getLogger(__name__)

STALE_S = 30.0  # a state older than this (no refresh) is not trusted
MAX_WORKERS = 1000  # states kept at most (anyone who may publish could invent ids)


class WorkerDirectory:
    def __init__(
        self, cfg: MqttConfig, client_id: str, allowlist: UrlAllowlist | None = None
    ) -> None:
        self.cfg = cfg
        # Anyone who may publish on the broker can advertise a worker: only URLs in this are
        # ever called (fleet.allowed_worker_urls).
        self.allowlist = allowlist or UrlAllowlist(FleetConfig().allowed_worker_urls)
        self.untrusted: set[str] = set()
        self.link = MqttLink(cfg, client_id)
        self.workers: dict[str, WorkerState] = {}
        self.garbage = 0
        self._changed = asyncio.Event()

    async def start(self) -> None:
        await self.link.subscribe(topics.all_worker_states(self.cfg.prefix), self._on_state)
        await self.link.start()

    async def stop(self) -> None:
        await self.link.stop()

    def _on_state(self, topic: str, payload: bytes) -> None:
        if not payload:
            return  # a cleared retained state
        try:
            state = parse_payload(WorkerState, payload, topic)
        except MobiEyeError as exc:
            self.garbage += 1
            log.warning("skipping worker state on %s: %s", topic, exc)
            return
        parsed = topics.parse(topic, self.cfg.prefix)
        if parsed is None or parsed.id != state.id:
            self.garbage += 1
            log.warning("skipping worker state on %s: it names worker %r", topic, state.id)
            return
        refused = self.allowlist.why_not(state.url) if state.url else None
        if refused is not None:
            if state.id not in self.untrusted and len(self.untrusted) < 1000:
                self.untrusted.add(state.id)
                log.warning("ignoring worker %s: %s", state.id, refused)
            self.workers.pop(state.id, None)
            return
        if state.id not in self.workers and len(self.workers) >= MAX_WORKERS:
            self.garbage += 1
            return
        previous = self.workers.get(state.id)
        if previous is None or previous.status != state.status:
            log.info("worker %s is %s (%s)", state.id, state.status, state.url or "no url")
        self.workers[state.id] = state
        self._changed.set()

    async def wait_for_candidates(self, timeout_s: float) -> bool:
        """Give the retained states a moment to arrive after connecting."""
        deadline = time.monotonic() + timeout_s
        while not self.candidates():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return True

    def is_offline(self, worker_id: str) -> bool:
        state = self.workers.get(worker_id)
        return state is not None and state.status == "offline"

    def candidates(self, exclude: set[str] | None = None) -> list[WorkerState]:
        """Online workers with room that can detect, least loaded first; excluded ones only as a
        last resort."""
        now = time.time()
        live = [
            w for w in self.workers.values() if w.has_room and w.url and now - w.updated < STALE_S
        ]
        # Agents starting together see the same states: a random tie-break spreads them.
        live.sort(key=lambda w: (round(w.load, 1), w.streams / max(1, w.capacity), random.random()))
        skip = exclude or set()
        return [w for w in live if w.id not in skip] + [w for w in live if w.id in skip]
