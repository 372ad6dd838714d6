"""When an MQTT link tries again after a failure, and how loudly it says so (pure).

Backoff doubles from ``low_s`` to ``high_s`` with ±25 % jitter (a fleet cut off together must
not reconnect in lockstep). A session that lived longer than ``high_s`` resets it; sessions
that die at once (two processes sharing a client id, each kicking the other off) keep backing
off. Failed connects are logged at full level ``quiet_after`` times, then once more to say the
link goes quiet, then at DEBUG, unless the reason changes.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

QUIET_AFTER = 3


@dataclass
class Reconnect:
    low_s: float = 0.5
    high_s: float = 10.0
    quiet_after: int = QUIET_AFTER
    attempts: int = 0  # consecutive failures, for the backoff
    refusals: int = 0  # consecutive failed connects, for quieting the log
    last_reason: str | None = None

    def connected(self) -> None:
        self.refusals = 0

    def failed(self, session_lasted_s: float | None, rand: float | None = None) -> float:
        """A session ended (after ``session_lasted_s``) or a connect failed (None): the delay
        before the next attempt."""
        if session_lasted_s is not None and session_lasted_s > self.high_s:
            self.attempts = 0
        self.attempts += 1
        base = min(self.high_s, self.low_s * 2 ** (self.attempts - 1))
        jitter = random.uniform(0.75, 1.25) if rand is None else 0.75 + 0.5 * rand
        return float(base * jitter)

    def refusal_level(self, reason: str, refused: bool) -> tuple[int, bool]:
        """A connect failed for ``reason``: (log level, whether to say the link goes quiet)."""
        changed = reason != self.last_reason
        self.last_reason = reason
        self.refusals += 1
        if self.refusals <= self.quiet_after or changed:
            return (logging.ERROR if refused else logging.WARNING), False
        if self.refusals == self.quiet_after + 1:
            return logging.WARNING, True
        return logging.DEBUG, False
