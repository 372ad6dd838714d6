"""The soak's resource verdict (pure): the worker's memory, file descriptors, threads and
asyncio tasks, and the latency, minute by minute. A leak shows as growth after warm-up, a
slow-down as latency drifting up; either fails the soak."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mobieye.stats import percentiles


@dataclass(frozen=True)
class ResourceLimits:
    max_rss_growth: float = 0.05  # share of the first window after warm-up
    warmup_windows: int = 1  # windows left out first: models, caches and codecs settle
    max_latency_drift: float = 1.5  # last windows' p95 over the first ones' (after warm-up)
    latency_slack_ms: float = 10.0  # a jitter this small is no drift on a 2-core machine


def resource_windows(
    samples: Sequence[Mapping[str, Any]], latencies: Sequence[tuple[float, float]], window_s: float
) -> list[dict[str, Any]]:
    """Per window: the worker's median RSS and the most fds, threads and asyncio tasks it held
    (``samples``: {"t", "rss", "fds", "threads", "tasks"?}, t from the start), and the
    latency percentiles of every stream's results (``latencies``: (t, ms)).

    Windows after the last result are left out: the streams had ended, and the worker's
    samples there judge its shutdown, not the soak. So is a last window the run covers for less
    than half its length: a few results as the streams stop are no window's percentiles (one
    such 0.5-s tail, p95 108 ms against 58-72 in the full windows, failed a CI soak)."""
    if not samples:
        return []
    end = max(s["t"] for s in samples)
    if latencies:
        end = min(end, max(t for t, _ in latencies))
    n = int(end // window_s) + 1
    rows = []
    for i in range(n):
        lo, hi = i * window_s, (i + 1) * window_s
        here = [s for s in samples if lo <= s["t"] < hi]
        if not here or (i > 0 and i == n - 1 and end - lo < window_s / 2):
            continue
        tasks = [s["tasks"] for s in here if s.get("tasks") is not None]
        lat = percentiles([ms for t, ms in latencies if lo <= t < hi])
        rows.append(
            {
                "t0_s": round(lo, 1),
                "rss_mb": round(statistics.median(s["rss"] for s in here) / 2**20, 1),
                "fds": max(s["fds"] for s in here),
                "threads": max(s["threads"] for s in here),
                "tasks": max(tasks) if tasks else None,
                "latency_ms": {k: lat[k] for k in ("p50", "p95", "p99")},
            }
        )
    return rows


def resource_problems(rows: Sequence[Mapping[str, Any]], limits: ResourceLimits) -> list[str]:
    """What the windows say is wrong: memory that kept growing, latency that drifted."""
    judged = list(rows[limits.warmup_windows :])
    if len(judged) < 2:
        return [f"too short to judge resources: {len(judged)} window(s) after warm-up"]
    found = []
    first, last = judged[0]["rss_mb"], judged[-1]["rss_mb"]
    growth = (last - first) / first if first else 0.0
    if growth > limits.max_rss_growth:
        found.append(
            f"worker RSS grew {growth:.1%} after warm-up ({first} -> {last} MB; limit "
            f"{limits.max_rss_growth:.0%})"
        )
    third = max(1, len(judged) // 3)
    early = [r["latency_ms"]["p95"] for r in judged[:third] if r["latency_ms"]["p95"] is not None]
    late = [r["latency_ms"]["p95"] for r in judged[-third:] if r["latency_ms"]["p95"] is not None]
    if early and late:
        before, after = statistics.median(early), statistics.median(late)
        if after > before * limits.max_latency_drift + limits.latency_slack_ms:
            found.append(
                f"latency drifted: p95 {before:.0f} ms early, {after:.0f} ms late (limit "
                f"{limits.max_latency_drift}x + {limits.latency_slack_ms:.0f} ms)"
            )
    for key in ("fds", "threads", "tasks"):
        values = [r[key] for r in judged if r[key] is not None]
        if values and values[-1] > 2 * values[0] + 16:
            found.append(f"worker {key} kept growing: {values[0]} -> {values[-1]}")
    return found
