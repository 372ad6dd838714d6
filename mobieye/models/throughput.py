"""Detector throughput by batch size and device: what cross-stream keyframe batching buys.

A worker batches the keyframes of its streams that are ready together into one detector call
(DetectorPool). Whether that pays depends on the hardware: on a GPU a batch of 8 costs far
less than 8 single calls; ONNX Runtime on a small CPU costs about the same per image. This
measures it on real frames, through the same UltralyticsDetector the worker uses, batch 1 (no
batching) being the baseline of every row.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mobieye.config import DetectorConfig, LadderModel
from mobieye.detector import Image, UltralyticsDetector
from mobieye.models.profile import machine_id
from mobieye.stats import percentile

WARMUP_CALLS = 3


@dataclass(frozen=True)
class ThroughputRow:
    label: str
    device: str
    half: bool
    batch: int
    ms_per_call: float  # mean
    p95_ms_per_call: float
    ms_per_image: float
    images_per_s: float
    speedup: float  # images/s over the same model and device at batch 1
    calls: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def device_name(device: str | None) -> str:
    """What a device setting names on this machine, e.g. "NVIDIA H200" or the CPU model."""
    if device is not None and device.startswith("cuda"):
        import torch

        index = int(device.split(":", 1)[1]) if ":" in device else 0
        return str(torch.cuda.get_device_name(index))
    return f"{machine_id()} ({platform.machine()})"


def measure_throughput(
    model: LadderModel,
    frames: Sequence[Image],
    batches: Sequence[int],
    *,
    device: str | None = None,
    half: bool = False,
    threads: int = 1,
    calls: int = 10,
    progress: Callable[[str], None] | None = None,
) -> list[ThroughputRow]:
    """Time ``calls`` detector calls at each batch size (frames cycled), after a warm-up."""
    if not frames:
        raise ValueError("no frames to time on")
    if calls < 1 or not batches or min(batches) < 1:
        raise ValueError(f"need calls >= 1 and batch sizes >= 1, got {calls}, {list(batches)}")
    cfg = DetectorConfig(
        model=model.path, imgsz=model.imgsz, threads=threads, device=device, half=half
    )
    detector = UltralyticsDetector(cfg, allow_untrained=True)
    detector.load()
    rows: list[ThroughputRow] = []
    base_rate: float | None = None
    for batch in sorted(set(batches)):
        images = [frames[i % len(frames)] for i in range(batch)]
        for _ in range(WARMUP_CALLS):  # per batch size: a GPU builds kernels per shape
            detector.detect(images)
        times = np.empty(calls, dtype=np.float64)
        for i in range(calls):
            images = [frames[(i * batch + j) % len(frames)] for j in range(batch)]
            started = time.perf_counter()
            detector.detect(images)
            times[i] = (time.perf_counter() - started) * 1000
        mean = float(times.mean())
        rate = batch * 1000 / mean
        base_rate = base_rate or rate  # the smallest batch measured (1 unless left out)
        rows.append(
            ThroughputRow(
                label=model.label,
                device=device or "auto",
                half=half,
                batch=batch,
                ms_per_call=round(mean, 3),
                p95_ms_per_call=round(percentile(times, 95) or 0.0, 3),
                ms_per_image=round(mean / batch, 3),
                images_per_s=round(rate, 1),
                speedup=round(rate / base_rate, 2),
                calls=calls,
            )
        )
        if progress is not None:
            progress(
                f"{model.label} on {device or 'auto'}: batch {batch}: {mean:.1f} ms per call, "
                f"{rate:.0f} images/s"
            )
    return rows


def format_throughput(rows: Sequence[ThroughputRow]) -> str:
    """A Markdown table, one row per (model, device, batch)."""
    lines = [
        "| model | device | batch | ms / call (p95) | ms / image | images / s | vs batch 1 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        device = r.device + (" FP16" if r.half else "")
        lines.append(
            f"| {r.label} | {device} | {r.batch} | {r.ms_per_call:.1f} ({r.p95_ms_per_call:.1f})"
            f" | {r.ms_per_image:.2f} | {r.images_per_s:.0f} | {r.speedup:.2f}x |"
        )
    return "\n".join(lines)
