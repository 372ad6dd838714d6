"""Draining a worker before it goes away (SIGTERM, or a drain command over MQTT).

The worker stops admitting (its MQTT state says ``draining``, ``/healthz`` turns 503 so a
readiness probe takes it out), tells every edge to move (a ``move`` message on the data
channel), keeps serving each stream until its edge has connected elsewhere and left, and exits
when the last one has gone or ``worker.drain_timeout_s`` passes. A stream still here at the
deadline is named in the log with the reason its edge gave (or that it gave none).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from mobieye.messages import Moving

log = logging.getLogger(__name__)


class Movable(Protocol):
    """A stream as the drain sees it (cloud_worker.session.StreamSession)."""

    stream_id: str
    move_answer: Moving | None

    def ask_to_move(self, reason: str, deadline_s: float) -> bool: ...


def stay_reason(asked: bool, answer: Moving | None) -> str:
    """Why a stream was still here when the drain's time ran out (pure)."""
    if not asked:
        return "its data channel was not open: the edge could not be told to move"
    if answer is None:
        return "its edge never answered the move (an older edge, or one that stopped reading)"
    if answer.ok:
        return f"its edge was still moving: {answer.detail or 'no detail'}"
    return f"its edge could not move: {answer.detail or 'no reason given'}"


@dataclass
class DrainOutcome:
    reason: str
    streams: int  # served when the drain began
    left: int  # ended before the deadline (moved away, or their edges stopped)
    stayed: dict[str, str] = field(default_factory=dict)  # stream id -> why
    seconds: float = 0.0


class Drainer:
    """Runs one drain for a worker; ``on_done`` is called when it ends (the process exits)."""

    def __init__(
        self,
        sessions: Mapping[str, Movable],
        timeout_s: float,
        on_start: Callable[[], None],
        on_done: Callable[[DrainOutcome], None],
    ) -> None:
        self._sessions = sessions
        self.timeout_s = timeout_s
        self._on_start = on_start
        self._on_done = on_done
        self.reason: str | None = None  # set once draining
        self.outcome: DrainOutcome | None = None
        self._task: asyncio.Task[None] | None = None
        self._left = asyncio.Event()

    def stream_left(self) -> None:
        """A stream ended (the worker's context calls this for every one)."""
        self._left.set()

    @property
    def draining(self) -> bool:
        return self.reason is not None

    def start(self, reason: str) -> bool:
        """Begin draining (on the event loop); False when a drain has already begun."""
        if self.reason is not None:
            return False
        self.reason = reason
        self._task = asyncio.ensure_future(self._run(reason))
        return True

    async def _run(self, reason: str) -> None:
        started = time.monotonic()
        deadline = started + self.timeout_s
        first = dict(self._sessions)
        log.warning("draining (%s): admitting no more streams; moving %d stream(s) away within "
                    "%.0f s", reason, len(first), self.timeout_s)  # fmt: skip
        self._on_start()
        asked = {sid: s.ask_to_move(reason, self.timeout_s) for sid, s in first.items()}
        try:
            while self._sessions and (remaining := deadline - time.monotonic()) > 0:
                self._left.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._left.wait(), remaining)
        finally:
            left = dict(self._sessions)
            outcome = DrainOutcome(
                reason=reason,
                streams=len(first),
                left=sum(1 for sid in first if sid not in left),
                stayed={
                    sid: stay_reason(asked.get(sid, False), s.move_answer)
                    for sid, s in left.items()
                },
                seconds=round(time.monotonic() - started, 2),
            )
            self.outcome = outcome
            for sid, why in outcome.stayed.items():
                log.error("drain: stream %s did not move within %.0f s: %s; closing it",
                          sid, self.timeout_s, why)  # fmt: skip
            log.warning("drained in %.1f s: %d of %d stream(s) left before the deadline",
                        outcome.seconds, outcome.left, outcome.streams)  # fmt: skip
            self._on_done(outcome)
