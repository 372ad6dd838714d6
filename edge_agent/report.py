"""What one edge run measured: the summary report (JSON) and the live status line."""

from __future__ import annotations

import json
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

from edge_agent.ledger import Match
from mobieye.clock import frames_between
from mobieye.messages import Result
from mobieye.stats import percentile, percentiles

STATUS_WINDOW_S = 2.0


class RunStats:
    def __init__(self, source: str) -> None:
        self.source = source
        self.started_s = time.monotonic()
        self.stopped_s: float | None = None  # when capture stopped (before the drain)
        self.frames_captured = 0
        self.frames_sent = 0
        self.frames_with_result = 0
        self.frames_with_boxes = 0  # results that drew at least one box
        self.box_ages: list[int] = []  # per result: frames since the detection its boxes are from
        self.results_before_detection = 0  # results sent before any detection completed
        self.latencies_ms: list[float] = []
        self.worker_step_ms: list[float] = []  # the worker's per-frame tracking/policy time
        self.detector_runs = 0
        self.classes_seen: Counter[str] = Counter()
        self.result_sources: Counter[str] = Counter()
        self.out_of_order = 0
        self.model: str | None = None
        self.worker_id: str | None = None
        self.stream_id: str | None = None
        self.errors: list[str] = []
        self.failovers = 0
        self.moves = 0  # switches to another worker because this one drained (no gap)
        self.last_result_s: float | None = None  # arrival of the newest cloud result
        self._last_answered_capture: float | None = None
        self.max_result_gap_ms = 0.0  # longest capture stretch with no cloud result
        self._recent: deque[tuple[float, float, int, int | None]] = deque()  # t, ms, boxes, age

    def add(self, match: Match, result: Result, now_s: float) -> None:
        if not match.in_order:
            self.out_of_order += 1
            return  # a stale result: never shown, not counted as a result for its frame
        self.frames_with_result += 1
        self.last_result_s = now_s
        capture = match.frame.capture_s
        previous = self._last_answered_capture or self.started_s
        self.max_result_gap_ms = max(self.max_result_gap_ms, (capture - previous) * 1000)
        self._last_answered_capture = capture
        self.latencies_ms.append(match.latency_ms)
        self.worker_step_ms.append(result.timings.track_ms)
        self.detector_runs = max(self.detector_runs, result.detector_runs)
        self.result_sources[result.source] += 1
        self.frames_with_boxes += bool(result.boxes)
        age = box_age(result)
        if age is None:
            self.results_before_detection += 1
        else:
            self.box_ages.append(age)
        self.model = result.model
        for box in result.boxes:
            self.classes_seen[box.label] += 1
        self._recent.append((now_s, match.latency_ms, len(result.boxes), age))

    def status_line(self, now_s: float) -> str:
        while self._recent and now_s - self._recent[0][0] > STATUS_WINDOW_S:
            self._recent.popleft()
        n = len(self._recent)
        if not n:
            return f"{now_s - self.started_s:5.1f}s | waiting for results ({self.frames_sent} sent)"
        lat = [r[1] for r in self._recent]
        fps = n / STATUS_WINDOW_S
        det = self.detector_runs / max(1, self.frames_sent)
        age = self._recent[-1][3]
        p50, p95 = percentile(lat, 50) or 0.0, percentile(lat, 95) or 0.0
        return (
            f"{now_s - self.started_s:5.1f}s | {fps:4.1f} fps | latency p50 {p50:5.1f} ms "
            f"p95 {p95:5.1f} ms | boxes {self._recent[-1][2]:2d} "
            f"{'(no detection yet)' if age is None else f'{age} frames old'} | "
            f"detect {det:4.0%} | {self.model}"
        )

    def summary(self, uplink_bytes: int | None) -> dict[str, Any]:
        duration = (self.stopped_s or time.monotonic()) - self.started_s
        return {
            "source": self.source,
            "model": self.model,
            "worker_id": self.worker_id,
            "stream_id": self.stream_id,
            "duration_s": round(duration, 2),
            "frames_captured": self.frames_captured,
            "frames_sent": self.frames_sent,
            "frames_with_result": self.frames_with_result,
            "result_ratio": round(self.frames_with_result / max(1, self.frames_captured), 4),
            "frames_with_boxes": self.frames_with_boxes,
            "results_before_detection": self.results_before_detection,
            "box_age_frames": _age_summary(self.box_ages),
            "latency_ms": percentiles(self.latencies_ms),
            "worker_step_ms": percentiles(self.worker_step_ms),
            "detector_runs": self.detector_runs,
            "detector_fraction": round(self.detector_runs / max(1, self.frames_sent), 4),
            "result_sources": dict(self.result_sources),
            "out_of_order_results": self.out_of_order,
            "classes_seen": dict(self.classes_seen.most_common()),
            "uplink_kbps": (
                round(uplink_bytes * 8 / 1000 / duration, 1) if uplink_bytes and duration else None
            ),
            "fps": round(self.frames_captured / duration, 2) if duration else None,
            "errors": self.errors,
            "failovers": self.failovers,
            "moves": self.moves,
            "max_result_gap_ms": round(self.max_result_gap_ms, 1),
        }


def trace_record(match: Match, result: Result) -> dict[str, Any]:
    """One result's line in ``--trace``."""
    return {
        "seq": match.frame.seq,
        "pts": result.pts,
        "capture_s": round(match.frame.capture_s, 6),
        "latency_ms": round(match.latency_ms, 2),
        "source": result.source,
        "detect_seq": result.detect_seq,
        "box_age_frames": box_age(result),
        "boxes": len(result.boxes),
        "size": [result.width, result.height],
        "model": result.model,
        "timings": result.timings.model_dump(),
    }


def box_age(result: Result) -> int | None:
    """Frames between this result and the detection its boxes come from (None: no detection
    has completed on the stream yet)."""
    return frames_between(result.detect_seq, result.seq)


def _age_summary(ages: list[int]) -> dict[str, float | None]:
    p = percentiles(ages)
    return {"p50": p["p50"], "p95": p["p95"], "max": p["max"]}


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Write atomically: a reader never sees a half-written report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(path)
