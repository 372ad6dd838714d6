"""When the edge gives up on its worker, and whom it tries next (pure: time is passed in).

A worker is lost when its results stop for ``result_timeout_s`` while the source delivers (time
a live source spends reopening is not the worker's silence), or when the fleet reports its
last will and its results have been silent for ``will_confirm_s`` too (a restarting
broker sends every client's will, so a will alone proves nothing). A lost worker is tried again
only after ``exclude_s``, or sooner when nothing else is left.
"""

from __future__ import annotations

from dataclasses import dataclass, field

WILL_CONFIRM_S = 0.5
RETRY_S = 0.5  # between attempts to find a worker after losing one
EXCLUDE_S = 10.0


@dataclass
class Failover:
    result_timeout_s: float
    will_confirm_s: float = WILL_CONFIRM_S
    exclude_s: float = EXCLUDE_S
    _excluded: dict[str, float] = field(default_factory=dict)  # worker -> excluded until

    def loss(
        self,
        now_s: float,
        connected_s: float,
        last_result_s: float | None,
        will_seen: bool,
        source_down_s: float | None = None,
    ) -> str | None:
        """Why the current worker counts as lost now, or None while it is not.

        ``source_down_s``: the last moment the source was down (None: it never was); the
        worker's silence counts from then at the earliest."""
        silent = now_s - max(last_result_s or 0.0, connected_s)
        waited = now_s - max(last_result_s or 0.0, connected_s, source_down_s or 0.0)
        if waited > self.result_timeout_s:
            return f"no results for {self.result_timeout_s:.1f} s"
        if will_seen and silent > self.will_confirm_s:
            return "the worker went offline (MQTT last will)"
        return None

    def lost(self, worker: str, now_s: float) -> None:
        """The stream left ``worker``: don't go back to it for a while."""
        self._excluded[worker] = now_s + self.exclude_s

    def excluded(self, now_s: float) -> set[str]:
        """Workers to try only as a last resort now."""
        self._excluded = {w: until for w, until in self._excluded.items() if until > now_s}
        return set(self._excluded)
