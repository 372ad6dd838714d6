"""``mobieye bench --soak``: one worker, several streams of different sizes for minutes; do
detections keep completing for every stream, in every window, with no traceback in the log?

Streams start at different widths and each one changes size on a schedule (on top of what its
adaptive controller does), so the detector pool always holds keyframes of several sizes and
models. The worker's log, every stream's trace and /healthz once a second are kept; the verdict
is judged on the traces (what the edges received), window by window (mobieye/bench/soak_score).
Writes ``--out`` (JSON), a Markdown table and a plot beside it; exits 1 when the soak failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import httpx
import psutil
import yaml

from mobieye.bench.components import machine
from mobieye.bench.modes import mode_settings
from mobieye.bench.report import pyplot
from mobieye.bench.run import Loopback, bench_env, stop_process, wait_healthy
from mobieye.bench.soak_resources import ResourceLimits, resource_problems, resource_windows
from mobieye.bench.soak_score import SoakLimits, problems, windows
from mobieye.config import LadderModel, Settings
from mobieye.errors import MobiEyeError
from mobieye.runtime import die_with_parent, free_port

WIDTHS = (640, 480, 352)  # the sizes streams move between; each starts at a different one
HEALTH_PERIOD_S = 1.0
WARMUP_S = 60.0  # memory is judged from here on: models, codecs and caches settle first


def _read_trace(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short when the agent stopped
    return out


def _start_worker(env: dict[str, str], log_file: IO[bytes]) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "cloud_worker"]
    return subprocess.Popen(
        argv, env=env, stdout=log_file, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
    )


async def _watch_health(
    url: str, pid: int, log: list[dict[str, Any]], usage: list[dict[str, Any]], stop: asyncio.Event
) -> None:
    """/healthz and the worker's resources once a second (asyncio tasks from /metrics)."""
    process = psutil.Process(pid)
    started = time.monotonic()
    async with httpx.AsyncClient(trust_env=False, timeout=2) as client:
        while not stop.is_set():
            t = time.monotonic()
            try:
                r = await client.get(url + "/healthz")
                log.append({"t": t, "status": r.status_code, "error": r.json().get("error")})
                metrics = (await client.get(url + "/metrics")).text
            except (httpx.HTTPError, ValueError) as exc:
                log.append({"t": t, "status": None, "error": repr(exc)})
                metrics = ""
            with contextlib.suppress(psutil.Error):
                usage.append({"t": t - started, "rss": process.memory_info().rss,
                              "fds": process.num_fds(), "threads": process.num_threads(),
                              "tasks": _gauge(metrics, "mobieye_asyncio_tasks")})  # fmt: skip
            await asyncio.sleep(HEALTH_PERIOD_S)


def _gauge(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


async def _soak(
    settings: Settings, video: Path, streams: int, duration_s: float, resize_s: float,
    work: Path, note: Callable[[str], None], window_s: float,
) -> dict[str, Any]:  # fmt: skip
    topology = Loopback()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cfg = settings.model_dump(mode="json", exclude={"edge"})
    cfg["log_level"] = "INFO"
    cfg["worker"].update(host="127.0.0.1", port=port, max_streams=max(8, streams), id="soak")
    (work / "worker.yaml").write_text(yaml.safe_dump(cfg))
    log_path = work / "worker.log"
    env = {**bench_env(), "MOBIEYE_CONFIG": str(work / "worker.yaml")}
    agents: list[subprocess.Popen[bytes]] = []
    health: list[dict[str, Any]] = []
    usage: list[dict[str, Any]] = []
    stop = asyncio.Event()
    with log_path.open("wb") as log_file:
        worker = _start_worker(env, log_file)
        try:
            await wait_healthy(topology, url, worker)
            note(f"worker ready at {url}; starting {streams} streams for {duration_s:.0f} s")
            for i in range(streams):
                edge = settings.model_dump(mode="json")
                edge["edge"].update(worker_url=url, stream_id=f"soak-{i}")
                widths = [WIDTHS[(i + k) % len(WIDTHS)] for k in range(len(WIDTHS))]
                spec = {
                    "settings": edge, "video": str(video), "duration": duration_s,
                    "timeline": False, "trace": str(work / f"soak-{i}.jsonl"),
                    "resize": {"widths": widths, "every_s": resize_s},
                }  # fmt: skip
                (work / f"spec{i}.json").write_text(json.dumps(spec))
                argv = [sys.executable, "-m", "edge_agent.bench_agent", str(work / f"spec{i}.json"),
                        str(work / f"out{i}.json")]  # fmt: skip
                agents.append(topology.popen_edge(argv, bench_env()))
            watcher = asyncio.create_task(_watch_health(url, worker.pid, health, usage, stop))
            started = time.monotonic()
            waits = [asyncio.create_task(asyncio.to_thread(a.wait)) for a in agents]
            while not all(w.done() for w in waits):
                await asyncio.wait(waits, timeout=window_s)
                bad = sum(1 for h in health if h["status"] != 200)
                note(f"soak {time.monotonic() - started:4.0f} / {duration_s:.0f} s: "
                     f"{len(health)} health checks, {bad} not ok")  # fmt: skip
            codes = [w.result() for w in waits]
            stop.set()
            await watcher
            async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
                summaries = (await client.get(url + "/streams")).json()
        finally:
            stop.set()
            for a in agents:
                stop_process(a)
            await asyncio.to_thread(stop_process, worker)
    if any(codes):
        raise MobiEyeError(f"soak: edge agents exited with {codes}")
    return {
        "codes": codes,
        "health": health,
        "usage": usage,
        "worker_streams": summaries,
        "reports": [
            json.loads((work / f"out{i}.json").read_text())["report"] for i in range(streams)
        ],
        "traces": {f"soak-{i}": _read_trace(work / f"soak-{i}.jsonl") for i in range(streams)},
        "log": log_path.read_text(errors="replace"),
    }


def _first_capture(traces: dict[str, list[dict[str, Any]]]) -> float:
    starts = [r["capture_s"] for records in traces.values() for r in records if "capture_s" in r]
    return min(starts) if starts else 0.0


def _resource_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["", "| window from (s) | worker RSS (MB) | fds | threads | asyncio tasks | "
             "latency p50 / p95 / p99 (ms) |", "|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lat = r["latency_ms"]
        lines.append(f"| {r['t0_s']:.0f} | {r['rss_mb']} | {r['fds']} | {r['threads']} | "
                     f"{r['tasks'] if r['tasks'] is not None else '?'} | {lat['p50']} / "
                     f"{lat['p95']} / {lat['p99']} |")  # fmt: skip
    return lines


def _markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Machine: {result['machine']}  ",
        f"Date: {result['date']}; clip {Path(result['video']).name}; {result['streams']} "
        f"streams on one worker for {result['duration_s']:.0f} s; windows of "
        f"{result['window_s']:.0f} s; sizes change every {result['resize_every_s']:.0f} s",
        "",
        "| stream | windows | detector share min / mean | box age p95 max | box age max | "
        "sizes seen | frames with boxes |",
        "|---|---|---|---|---|---|---|",
    ]
    for stream, wins in sorted(result["windows"].items()):
        shares = [w["detector_share"] for w in wins] or [0.0]
        p95s = [w["box_age_frames"]["p95"] or 0 for w in wins] or [0]
        maxes = [w["box_age_frames"]["max"] or 0 for w in wins] or [0]
        sizes = sorted({s for w in wins for s in w["sizes"]})
        boxes = sum(w["frames_with_boxes"] for w in wins)
        results = sum(w["results"] for w in wins)
        lines.append(
            f"| {stream} | {len(wins)} | {min(shares):.3f} / {sum(shares) / len(shares):.3f} | "
            f"{max(p95s)} | {max(maxes)} | {', '.join(sizes)} | {boxes} / {results} |"
        )
    lines += _resource_table(result.get("resources", []))
    v = result["verdict"]
    lines += [
        "",
        f"Health checks: {v['health_checks']}, not ok: {v['health_not_ok']}. Tracebacks in the "
        f"worker log: {v['tracebacks']}. Detector restarts: {v['detector_restarts']}. "
        f"Detections abandoned: {v['abandoned']}.",
        "",
        "**PASSED**" if v["passed"] else "**FAILED**:\n\n" + "\n".join(
            f"- {p}" for p in v["problems"]),
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def _plot(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for stream, wins in sorted(result["windows"].items()):
        t = [w["t0_s"] + result["window_s"] / 2 for w in wins]
        top.plot(t, [w["detector_share"] for w in wins], marker="o", label=stream)
        bottom.plot(t, [w["box_age_frames"]["p95"] for w in wins], marker="o", label=stream)
    limits = result["limits"]
    top.axhline(limits["min_detector_share"], color="#d62728", linestyle="--", label="floor")
    bottom.axhline(limits["max_box_age_p95"], color="#d62728", linestyle="--", label="bound")
    top.set_ylabel("detector share")
    bottom.set_ylabel("box age p95 (frames)")
    bottom.set_xlabel("seconds into the soak")
    top.grid(True, alpha=0.3)
    bottom.grid(True, alpha=0.3)
    top.legend(fontsize=8, ncol=3)
    top.set_title(f"soak: {result['streams']} streams, one worker")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_resources(result: dict[str, Any], path: Path) -> None:
    rows = result.get("resources") or []
    if not rows:
        return
    plt = pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    minutes = [r["t0_s"] / 60 for r in rows]
    top.plot(minutes, [r["rss_mb"] for r in rows], marker="o", color="#1f77b4")
    first = rows[min(1, len(rows) - 1)]["rss_mb"]
    top.axhline(first * 1.05, color="#d62728", linestyle="--", label="+5% over minute 1")
    top.set_ylabel("worker RSS (MB)")
    top.legend(fontsize=8)
    for key, style in (("p50", "-"), ("p95", "--"), ("p99", ":")):
        bottom.plot(minutes, [r["latency_ms"][key] for r in rows], style, marker=".", label=key)
    bottom.set_ylabel("latency (ms)")
    bottom.set_xlabel("minute of the soak")
    bottom.legend(fontsize=8, ncol=3)
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
    top.set_title(f"soak: {result['streams']} streams, worker memory and latency per minute")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_soak(
    settings: Settings, args: argparse.Namespace, ladder: list[LadderModel],
    note: Callable[[str], None],
) -> int:  # fmt: skip
    video = Path(args.video)
    try:
        streams = int(args.streams)
    except ValueError as exc:
        raise MobiEyeError(f"--soak takes one stream count, got --streams {args.streams}") from exc
    if streams < 2:
        raise MobiEyeError("--soak needs at least 2 streams (--streams N)")
    duration = args.duration or args.soak * 60
    window = args.window
    if duration < 2 * window:
        raise MobiEyeError(f"--duration {duration:.0f} s is under two --window {window:.0f} s")
    out = Path(args.out)
    if out.suffix != ".json":
        raise MobiEyeError(f"--out must name a .json file, got {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.with_suffix("")
    work = work.with_name(work.name + "-files")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    limits = SoakLimits(args.min_detector_share, args.max_box_age_p95, args.max_box_age)
    run_settings = mode_settings(settings, "mobieye", ladder, args.fixed_interval)
    run = asyncio.run(
        _soak(run_settings, video, streams, duration, args.resize_every, work, note, window)
    )

    per_stream = {s: windows(records, window) for s, records in run["traces"].items()}
    expected = int(duration // window)
    found = problems(per_stream, limits, expected)
    log_lines = run["log"].splitlines()
    tracebacks = sum(1 for line in log_lines if line.startswith("Traceback"))
    if tracebacks:
        found.append(f"the worker log holds {tracebacks} traceback(s): see {work / 'worker.log'}")
    bad = [h for h in run["health"] if h["status"] != 200]
    if bad:
        found.append(f"/healthz was not ok {len(bad)} time(s), first: {bad[0]['error']}")
    first = _first_capture(run["traces"])  # once: per record it made the analysis quadratic
    latencies = [(r["capture_s"] - first, r["latency_ms"])
                 for records in run["traces"].values() for r in records
                 if "capture_s" in r and "latency_ms" in r]  # fmt: skip
    resources = resource_windows(run["usage"], latencies, window)
    warmup = max(1, math.ceil(WARMUP_S / window))
    found += resource_problems(resources, ResourceLimits(warmup_windows=warmup))
    summaries = run["worker_streams"]["recent"] + run["worker_streams"]["active"]
    restarts = sum(1 for line in log_lines if "detector thread died" in line)
    result = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "video": str(video),
        "streams": streams,
        "duration_s": duration,
        "window_s": window,
        "resize_every_s": args.resize_every,
        "limits": vars(limits),
        "windows": per_stream,
        "resources": resources,
        "reports": run["reports"],
        "worker_streams": summaries,
        "verdict": {
            "passed": not found,
            "problems": found,
            "tracebacks": tracebacks,
            "detector_restarts": restarts,
            "abandoned": sum(int(s.get("detections_abandoned", 0)) for s in summaries),
            "health_checks": len(run["health"]),
            "health_not_ok": len(bad),
        },
        "files": work.name,  # beside --out: a relative name, so the JSON can be moved
    }
    md = _markdown(result)
    out.with_suffix(".md").write_text(md)
    _plot(result, out.with_name(out.stem + "_windows.png"))
    _plot_resources(result, out.with_name(out.stem + "_resources.png"))
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(out)
    print(md)
    note(f"saved {out}, {out.with_suffix('.md')} and the plot beside it; traces and the worker "
         f"log in {work}")  # fmt: skip
    return 0 if not found else 1
