"""Can this worker detect? A pure judgement over what the detector pool measured.

Health is an outcome, not activity: a thread that is alive but completes nothing, or completes
only failures, is as broken as a dead one. ``/healthz`` and the worker's MQTT state both say
what this returns, so a worker that can't detect is never reported fine and never chosen.
"""

from __future__ import annotations

from dataclasses import dataclass

# This many failed detections in a row, the newest within the stall bound: the detector is
# failing, not unlucky.
MAX_FAILURES = 3
# The reason goes into the worker's MQTT state (at most 500 characters) and /healthz; runtime
# errors (ONNX Runtime's, say) can run to kilobytes.
MAX_ERROR_CHARS = 300


@dataclass(frozen=True)
class DetectorFacts:
    """What the pool knows at ``now_s`` (monotonic seconds)."""

    now_s: float
    thread_alive: bool
    waiting: int = 0  # detections queued or running
    oldest_waiting_s: float | None = None  # submit time of the oldest of them
    last_success_s: float | None = None
    failures_since_success: int = 0
    last_failure_s: float | None = None
    last_error: str | None = None


def detector_problem(facts: DetectorFacts, stall_s: float) -> str | None:
    """Why the worker can't detect, or None when it can (as far as anything says)."""
    if not facts.thread_alive:
        return "the detector thread is not running"
    now = facts.now_s
    if facts.oldest_waiting_s is not None and now - facts.oldest_waiting_s > stall_s:
        last_ok = facts.last_success_s
        if last_ok is None or now - last_ok > stall_s:
            since = "ever" if last_ok is None else f"for {now - last_ok:.1f} s"
            return (
                f"no detection completed {since} while {facts.waiting} wait "
                f"(the oldest for {now - facts.oldest_waiting_s:.1f} s)"
            )
    recent_failure = facts.last_failure_s is not None and now - facts.last_failure_s <= stall_s
    if facts.failures_since_success >= MAX_FAILURES and recent_failure:
        return (
            f"the last {facts.failures_since_success} detections failed: "
            f"{_short(facts.last_error or 'unknown error')}"
        )
    return None


def _short(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "\u2026"
