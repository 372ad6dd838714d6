"""Judging a soak run from the edge agents' traces: do detections keep completing, for every
stream, in every window of the run? (Pure: trace records in, windows and problems out.)

A stream's trace holds one record per result: when its frame was captured, whether its boxes
came from a detection completed on this frame (``source == "detect"``), how old its boxes are
(``box_age_frames``) and the frame size. A window passes when frames got results, the detector
completed on at least ``min_detector_share`` of them, and boxes stayed young.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mobieye.stats import percentiles


@dataclass(frozen=True)
class SoakLimits:
    min_detector_share: float = 0.05
    """Detections completed per result, in every window of every stream."""
    max_box_age_p95: float = 45.0
    """Frames since the boxes' detection, p95 of a window."""
    max_box_age: float = 90.0
    """The oldest boxes any result may show (3 s at 30 fps), in every window."""
    settle_windows: int = 1
    """Windows at the start held to ``max_box_age`` but not to ``max_box_age_p95``: every
    stream starting at once, each edge's controller steps from its first model and level to
    the ones the shared worker sustains, a few seconds (more on a slower machine)."""


def windows(records: Iterable[Mapping[str, Any]], window_s: float) -> list[dict[str, Any]]:
    """Per window of ``window_s`` from the stream's first result: what its results showed.

    A last window shorter than half a window is left out (too few frames to judge)."""
    results = sorted(
        (r for r in records if "capture_s" in r and "source" in r), key=lambda r: r["capture_s"]
    )
    if not results:
        return []
    start = results[0]["capture_s"]
    span = results[-1]["capture_s"] - start
    n = int(span // window_s) + (1 if span % window_s >= window_s / 2 else 0)
    buckets: list[list[Mapping[str, Any]]] = [[] for _ in range(max(n, 1))]
    for r in results:
        i = int((r["capture_s"] - start) // window_s)
        if i < len(buckets):
            buckets[i].append(r)
    out = []
    for i, bucket in enumerate(buckets):
        ages = [r["box_age_frames"] for r in bucket if r.get("box_age_frames") is not None]
        detections = sum(1 for r in bucket if r["source"] == "detect")
        age = percentiles(ages)
        out.append(
            {
                "t0_s": round(i * window_s, 1),
                "results": len(bucket),
                "detections": detections,
                "detector_share": round(detections / len(bucket), 4) if bucket else 0.0,
                "frames_with_boxes": sum(1 for r in bucket if r.get("boxes")),
                "box_age_frames": {"p50": age["p50"], "p95": age["p95"], "max": age["max"]},
                "latency_p95_ms": percentiles([r["latency_ms"] for r in bucket])["p95"]
                if bucket
                else None,
                "sizes": sorted({"x".join(map(str, r["size"])) for r in bucket if r.get("size")}),
            }
        )
    return out


def problems(
    per_stream: Mapping[str, list[dict[str, Any]]], limits: SoakLimits, expected_windows: int
) -> list[str]:
    """Everything that failed, each naming its stream and window; empty: the soak passed."""
    out = []
    for stream, wins in sorted(per_stream.items()):
        if len(wins) < expected_windows:
            out.append(f"{stream}: results in {len(wins)} of {expected_windows} windows")
        for i, w in enumerate(wins):
            at = f"{stream} window {w['t0_s']:.0f}s"
            if not w["results"]:
                out.append(f"{at}: no results")
                continue
            if w["detector_share"] < limits.min_detector_share:
                out.append(
                    f"{at}: detector share {w['detector_share']:.3f} < "
                    f"{limits.min_detector_share} ({w['detections']} of {w['results']})"
                )
            age = w["box_age_frames"]
            if age["p95"] is None:
                out.append(f"{at}: no detection had completed")
                continue
            if i >= limits.settle_windows and age["p95"] > limits.max_box_age_p95:
                out.append(f"{at}: box age p95 {age['p95']} > {limits.max_box_age_p95} frames")
            if age["max"] > limits.max_box_age:
                out.append(f"{at}: box age max {age['max']} > {limits.max_box_age} frames")
    return out
