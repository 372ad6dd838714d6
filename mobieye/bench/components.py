"""Component figures: tracking step, detector inference, and the WebRTC receive path."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mobieye.config import Settings
from mobieye.detector import UltralyticsDetector
from mobieye.models.profile import machine_id
from mobieye.stats import percentiles


def machine() -> str:
    return f"{machine_id()}, no GPU, {platform.system()} {platform.release()}"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_detector(settings: Settings, video: Path, frames: int = 40) -> dict[str, Any]:
    detector = UltralyticsDetector(settings.detector)
    detector.load()
    cap = cv2.VideoCapture(str(video))
    times = []
    for _ in range(frames):
        ok, image = cap.read()
        if not ok:
            break
        started = time.perf_counter()
        detector.detect([np.asarray(image, np.uint8)])
        times.append((time.perf_counter() - started) * 1000)
    cap.release()
    return {
        "model": detector.name,
        "imgsz": settings.detector.imgsz,
        "threads": settings.detector.threads,
        "ms": percentiles(times),
    }


def measure_components(
    settings: Settings, video: Path, receive_seconds: float, note: Callable[[str], None]
) -> dict[str, Any]:
    from mobieye.tracking.bench import bench_flow
    from mobieye.webrtc.measure import measure_loopback_latency

    out: dict[str, Any] = {}
    note("tracking: FlowTracker with 5 and 20 boxes")
    out["tracking"] = {str(n): bench_flow(n_boxes=n, video_path=video) for n in (5, 20)}
    note("detector: inference on the clip's frames")
    out["detector"] = bench_detector(settings, video)
    out["receive"] = {}
    for low in (False, True):
        name = "low-latency" if low else "stock aiortc"
        note(f"receive path: {name}, {receive_seconds:.0f} s")
        out["receive"][name] = measure_loopback_latency(low, receive_seconds, settings.webrtc.codec)
    return out


def components_markdown(c: dict[str, Any]) -> list[str]:
    t, d = c["tracking"], c["detector"]
    lines = [
        "| tracking (FlowTracker.step, 640x480) | median ms | p95 ms |",
        "|---|---|---|",
        *(f"| {n} boxes | {t[n]['median_ms']:.2f} | {t[n]['p95_ms']:.2f} |" for n in ("5", "20")),
        "",
        f"Detector {d['model']} @{d['imgsz']} ({d['threads']} thread): "
        f"median {d['ms']['p50']} ms, p95 {d['ms']['p95']} ms per frame.",
        "",
        "| receive path (aiortc, loopback, 640x480@30) | p50 ms | p95 ms |",
        "|---|---|---|",
    ]
    for name, r in c["receive"].items():
        lines.append(f"| {name} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} |")
    return lines
