"""``mobieye bench``: the project's figures, measured side by side in one run.

Phases (each printed as it runs, all saved to OUT/bench.json and OUT/bench.md, with a latency CDF
plot in OUT/latency_cdf.png):
1. tracking: FlowTracker step time with 5 and 20 boxes on real 640x480 frames;
2. detector: inference time of the model on the clip's frames;
3. receive path: aiortc one-way latency over loopback, stock jitter buffer vs the low-latency one;
4. pipeline: a real worker process and edge agent over loopback WebRTC, one mode at a time:
   ``mobieye`` (keyframes + tracking), ``every-frame`` (the detector on every frame it can take:
   the baseline), ``stock-receive`` (mobieye with aiortc's stock jitter buffer).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mobieye.config import Settings
from mobieye.demo import free_port, start_worker, stop_worker, wait_healthy
from mobieye.detector import UltralyticsDetector
from mobieye.errors import MobiEyeError
from mobieye.stats import percentiles

log = logging.getLogger(__name__)

MODES: dict[str, dict[str, Any]] = {
    "mobieye": {},
    # The conventional cloud pipeline: the detector on every frame it can take, no tracking.
    "every-frame": {"keyframe": {"interval": 1, "min_interval": 1, "track_between": False}},
    "stock-receive": {"webrtc": {"low_latency_receive": False}},
}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def _cpu_seconds(pid: int) -> float:
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


async def bench_pipeline(
    settings: Settings, mode: str, video: Path, duration: float, fps: float
) -> dict[str, Any]:
    from edge_agent.agent import EdgeAgent, EdgeOutputs
    from edge_agent.sources import VideoSource, parse_source

    data = settings.model_dump(mode="json")
    for section, values in MODES[mode].items():
        data[section].update(values)
    port = free_port()
    data["edge"].update(worker_url=f"http://127.0.0.1:{port}", loop=True, fps=fps)
    run_settings = Settings.model_validate(data)
    with tempfile.TemporaryDirectory(prefix="mobieye-bench-") as tmp:
        proc = start_worker(run_settings, port, Path(tmp))
        try:
            await wait_healthy(f"http://127.0.0.1:{port}", proc, 180)
            source = VideoSource(parse_source(str(video)), fps=fps, loop_file=True)
            agent = EdgeAgent(run_settings, source, EdgeOutputs())
            cpu_before = _cpu_seconds(proc.pid)
            report = await agent.run(duration)
            cpu_s = _cpu_seconds(proc.pid) - cpu_before
            latencies = agent.stats.latencies_ms
        finally:
            await asyncio.to_thread(stop_worker, proc)
    frames = max(1, report["frames_sent"])
    return {
        "mode": mode,
        "frames": report["frames_captured"],
        "result_ratio": report["result_ratio"],
        "latency_ms": report["latency_ms"],
        "detector_fraction": report["detector_fraction"],
        "worker_cpu_ms_per_frame": round(cpu_s * 1000 / frames, 2),
        "worker_step_ms": report["worker_step_ms"],
        "uplink_kbps": report["uplink_kbps"],
        "latencies_ms": [round(v, 2) for v in latencies],
    }


def _markdown(result: dict[str, Any]) -> str:
    lines = [f"Machine: {result['machine']}  ", f"Date: {result['date']}", ""]
    t = result["tracking"]
    lines += [
        "| tracking (FlowTracker.step, 640x480) | median ms | p95 ms |",
        "|---|---|---|",
        *(f"| {n} boxes | {t[n]['median_ms']:.2f} | {t[n]['p95_ms']:.2f} |" for n in ("5", "20")),
        "",
    ]
    d = result["detector"]
    lines += [
        f"Detector {d['model']} @{d['imgsz']} ({d['threads']} thread): "
        f"median {d['ms']['p50']} ms, p95 {d['ms']['p95']} ms per frame.",
        "",
        "| receive path (aiortc, loopback, 640x480@30, VP8) | p50 ms | p95 ms |",
        "|---|---|---|",
    ]
    for name, r in result["receive"].items():
        lines.append(f"| {name} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} |")
    lines += [
        "",
        "| pipeline mode | frames | with result | latency p50 / p95 / p99 ms | detector "
        "runs/frame | worker CPU ms/frame (of it: track+policy step, mean) | uplink kbps |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["pipeline"].values():
        lat = r["latency_ms"]
        lines.append(
            f"| {r['mode']} | {r['frames']} | {r['result_ratio']:.1%} | "
            f"{lat['p50']} / {lat['p95']} / {lat['p99']} | {r['detector_fraction']:.2f} | "
            f"{r['worker_cpu_ms_per_frame']} ({r['worker_step_ms']['mean']}) | "
            f"{r['uplink_kbps']} |"
        )
    base = result["pipeline"].get("every-frame")
    ours = result["pipeline"].get("mobieye")
    if base and ours and base["worker_cpu_ms_per_frame"]:
        ratio = ours["worker_cpu_ms_per_frame"] / base["worker_cpu_ms_per_frame"]
        lines += ["", f"Worker CPU per frame, mobieye / every-frame: {ratio:.2f}"]
    return "\n".join(lines) + "\n"


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in result["pipeline"].values():
        values = np.sort(np.asarray(r["latencies_ms"]))
        if len(values):
            ax.plot(values, np.arange(1, len(values) + 1) / len(values), label=r["mode"])
    ax.set_xlabel("capture-to-result latency (ms)")
    ax.set_ylabel("fraction of frames")
    ax.set_xscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title("MobiEye over loopback WebRTC")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_bench(settings: Settings, args: argparse.Namespace) -> int:
    """Validate everything first (nothing runs on bad input), then measure."""
    video = Path(args.video)
    if not video.is_file():
        raise MobiEyeError(f"bench video {video} does not exist")
    modes = args.modes.split(",")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise MobiEyeError(f"unknown mode(s) {', '.join(unknown)}: choose from {', '.join(MODES)}")
    UltralyticsDetector(settings.detector)  # a bad model fails here, before any phase
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(_measure_all(settings, args, video, modes))
    md = _markdown(result)
    (out / "bench.md").write_text(md)
    (out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    _plot(result, out / "latency_cdf.png")
    print(md)
    _note(f"saved {out / 'bench.json'}, {out / 'bench.md'}, {out / 'latency_cdf.png'}")
    return 0


def _note(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


async def _measure_all(
    settings: Settings, args: argparse.Namespace, video: Path, modes: list[str]
) -> dict[str, Any]:
    from mobieye.tracking.bench import bench_flow
    from mobieye.webrtc.measure import measure_loopback_latency

    note = _note

    result: dict[str, Any] = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "video": str(video),
        "fps": args.fps,
        "duration_s": args.duration,
    }
    note("tracking: FlowTracker with 5 and 20 boxes")
    result["tracking"] = {
        str(n): await asyncio.to_thread(bench_flow, n_boxes=n, video_path=video) for n in (5, 20)
    }
    note("detector: inference on the clip's frames")
    result["detector"] = await asyncio.to_thread(bench_detector, settings, video)
    result["receive"] = {}
    for low in (False, True):
        name = "low-latency" if low else "stock aiortc"
        note(f"receive path: {name}, {args.receive_seconds:.0f} s")
        result["receive"][name] = await asyncio.to_thread(
            measure_loopback_latency, low, args.receive_seconds, settings.webrtc.codec
        )
    result["pipeline"] = {}
    for mode in modes:
        note(f"pipeline: {mode}, {args.duration:.0f} s at {args.fps:.0f} fps")
        r = await bench_pipeline(settings, mode, video, args.duration, args.fps)
        lat = r["latency_ms"]
        note(
            f"  {mode}: p50 {lat['p50']} ms, p95 {lat['p95']} ms, "
            f"CPU {r['worker_cpu_ms_per_frame']} ms/frame"
        )
        result["pipeline"][mode] = r

    return result
