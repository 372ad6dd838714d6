"""``mobieye bench``: MobiEye against the conventional cloud pipeline and DeepStream-style fixed
intervals, on the same clip, in one run, on loopback or an emulated link.

Everything is checked before anything runs (clip, ground truth, modes, link); the results are
written at the end, atomically: JSON at ``--out``, a Markdown table and PNG plots beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from mobieye.bench.capacity import holds, next_streams, sustained
from mobieye.bench.components import components_markdown, machine, measure_components
from mobieye.bench.modes import LOCAL, MODE_NAMES, NO_WORKER, mode_settings
from mobieye.bench.mot import bytetrack_anchor
from mobieye.bench.oracle import load_mot_gt, oracle_boxes, video_info
from mobieye.bench.outage import parse_outage
from mobieye.bench.report import markdown, plot_f1_vs_uplink, plot_latency_cdf
from mobieye.bench.run import Topology, no_link, run_mode, split_cores
from mobieye.bench.score import score_mode
from mobieye.config import LadderModel, Settings
from mobieye.detector import resolve_model
from mobieye.errors import MobiEyeError
from mobieye.runtime import default_data_dir


def _note(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def resolve_ladder(settings: Settings, spec: str | None) -> list[LadderModel]:
    from mobieye.models.ladder import default_ladder, ladder_from_spec

    if spec:
        ladder = ladder_from_spec(spec)
    elif settings.ladder:
        ladder = list(settings.ladder)
    elif settings.detector.model and not settings.detector.model.endswith(".pt"):
        ladder = [LadderModel(path=settings.detector.model, imgsz=settings.detector.imgsz,
                              accuracy=1.0)]  # fmt: skip
    else:
        ladder = default_ladder(default_data_dir())
    if not ladder:
        raise MobiEyeError("no models to benchmark: pass --models PATH[@IMGSZ],... or --model")
    for rung in ladder:
        resolve_model(rung.path)
    return ladder


def _topology(link: str, pin_worker_cores: int | None) -> AbstractContextManager[Topology]:
    if link == "loopback":
        return no_link(split_cores(pin_worker_cores) if pin_worker_cores else None)
    from mobieye.bench.linked import emulated_topology

    topology: AbstractContextManager[Topology] = emulated_topology(link)
    return topology


def _check_link(link: str) -> None:
    if link == "loopback":
        return
    from mobieye.netem import check_can_emulate, get_profile

    try:
        get_profile(link)
    except ValueError as exc:
        raise MobiEyeError(str(exc)) from exc
    try:
        check_can_emulate(link)
    except (PermissionError, RuntimeError) as exc:
        raise MobiEyeError(str(exc)) from exc


def capacity(sweep: list[dict[str, Any]], p95_ms: float) -> dict[str, int]:
    """Per mode, the most streams whose F1 vs oracle and p95 latency both held (below the
    fewest that failed: mobieye/bench/capacity.py)."""
    held: dict[str, dict[int, bool]] = {}
    for point in sweep:
        for mode, m in point["modes"].items():
            held.setdefault(mode, {})[point["streams"]] = holds(m, p95_ms)
    return {mode: sustained(results) for mode, results in held.items()}


def run_bench(settings: Settings, args: argparse.Namespace) -> int:
    video = Path(args.video)
    if not video.is_file():
        raise MobiEyeError(f"bench video {video} does not exist")
    if args.soak:
        from mobieye.bench.soak import run_soak

        return run_soak(settings, args, resolve_ladder(settings, args.models), _note)
    args.duration = args.duration or 20.0
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODE_NAMES]
    if unknown:
        raise MobiEyeError(
            f"unknown mode(s) {', '.join(unknown)}: choose from {', '.join(MODE_NAMES)}"
        )
    try:
        counts = sorted({int(n) for n in str(args.streams).split(",")})
    except ValueError as exc:
        raise MobiEyeError(f"--streams takes N or N,N,...: {args.streams!r}") from exc
    if not counts or counts[0] < 1 or args.workers < 1 or args.capacity_max < 1:
        raise MobiEyeError("--streams, --workers and --capacity-max must be at least 1")
    n_frames, width, height, clip_fps = video_info(video)
    gt = load_mot_gt(Path(args.gt), n_frames, width, height) if args.gt else None
    _check_link(args.link)
    if args.pin_worker_cores:
        if args.link != "loopback":
            raise MobiEyeError("--pin-worker-cores works on loopback only (not with --link)")
        split_cores(args.pin_worker_cores)  # refused now, not after the oracle
    ladder = resolve_ladder(settings, args.models)
    if args.load == "replay" and (args.local_model or any(m in LOCAL for m in modes)):
        raise MobiEyeError(
            "an on-device model needs frames to detect on: --load replay sends encoded packets "
            "only; use --load agents with --local-model or local-only"
        )
    outage = parse_outage(args.outage, args.duration) if args.outage else None
    out = Path(args.out)
    if out.suffix != ".json":
        raise MobiEyeError(f"--out must name a .json file, got {out}")
    sla = args.sla or settings.controller.sla_ms
    settings = settings.model_copy(
        update={"controller": settings.controller.model_copy(update={"sla_ms": sla})}
    )

    best = max(ladder, key=lambda m: m.accuracy)
    _note(f"oracle: {best.label} on every frame of {video.name} (cached after the first run)")
    oracle = oracle_boxes(video, best, settings.detector, _note)
    result: dict[str, Any] = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "video": str(video),
        "gt": args.gt,
        "streams": counts[0] if len(counts) == 1 else counts,
        "workers": args.workers,
        "load": args.load,
        "worker_cores": args.pin_worker_cores,  # None: not pinned, sharing every core
        "link": args.link,
        "sla_ms": sla,
        "min_score": args.min_score,
        "duration_s": args.duration,
        "ladder": [{"label": m.label, "accuracy": m.accuracy} for m in ladder],
        "oracle": best.label,
        "modes": {},
    }
    if gt is not None:
        _note("anchor: ultralytics' ByteTrack on the oracle's boxes of every frame, offline")
        result["anchor"] = {
            "bytetrack_on_oracle": bytetrack_anchor(oracle, gt, clip_fps, args.min_score)
        }
    if args.components:
        detector = settings.detector.model_copy(update={"model": best.path, "imgsz": best.imgsz})
        result["components"] = measure_components(
            settings.model_copy(update={"detector": detector}), video, args.receive_seconds, _note
        )

    def point(topology: Topology, mode: str, n: int) -> dict[str, Any]:
        _note(
            f"{mode}: {n} stream(s) on {args.workers} worker(s) for "
            f"{args.duration:.0f} s over {args.link}"
        )
        run = asyncio.run(
            run_mode(
                mode_settings(settings, mode, ladder, args.fixed_interval, args.local_model),
                mode, topology, video, args.duration, n,
                0 if mode in NO_WORKER else args.workers, args.load, args.replay_codec,
                outage,
            )
        )  # fmt: skip
        m = score_mode(run, oracle, gt, sla, args.min_score)
        lat = m["latency_ms"]
        _note(
            f"  {mode}: F1 vs oracle {m['f1_vs_oracle']:.3f}, p95 {lat['p95']} ms, "
            f"SLA misses {m['sla_miss_ratio']:.1%}, detector {m['detector_fraction']}, "
            f"uplink {m['uplink_kbps']} kbps"
        )
        return m

    with _topology(args.link, args.pin_worker_cores) as topology:
        if args.capacity:  # per mode, the counts the search asks for
            for mode in modes:
                held: dict[int, bool] = {}
                while (n := next_streams(held, args.capacity_max)) is not None:
                    m = point(topology, mode, n)
                    held[n] = holds(m, args.capacity_p95)
                    result.setdefault("sweep", []).append({"streams": n, "modes": {mode: m}})
                    _note(f"  {mode}: {n} stream(s) {'held' if held[n] else 'did not hold'}")
        else:
            for n in counts:
                runs = {mode: point(topology, mode, n) for mode in modes}
                if len(counts) == 1:
                    result["modes"] = runs
                else:
                    result.setdefault("sweep", []).append({"streams": n, "modes": runs})
    if "sweep" in result:
        result["capacity"] = capacity(result["sweep"], args.capacity_p95)
        cores = args.pin_worker_cores or len(os.sched_getaffinity(0))
        result["capacity_per_worker_core"] = {
            mode: round(n / (cores * args.workers), 2) for mode, n in result["capacity"].items()
        }
        # Each mode's figures at the most streams it sustained (else at its first count).
        result["modes"] = {}
        for pt in result["sweep"]:
            for mode, m in pt["modes"].items():
                if mode not in result["modes"] or pt["streams"] == result["capacity"][mode]:
                    result["modes"][mode] = m

    out.parent.mkdir(parents=True, exist_ok=True)
    md = markdown(result)
    if "sweep" in result:
        md = "".join(
            markdown({**result, "streams": point["streams"], "modes": point["modes"]})
            for point in result["sweep"]
        )
        md += (
            f"\nStreams sustained (F1 vs oracle >= 0.9, p95 <= {args.capacity_p95:.0f} ms) on "
            f"{args.workers} worker(s): "
            + ", ".join(f"{k} {v}" for k, v in result["capacity"].items())
            + "\n"
        )
        where = f"{args.pin_worker_cores} pinned" if args.pin_worker_cores else "all shared"
        md += (
            f"Per worker core ({where}): "
            + ", ".join(f"{k} {v:g}" for k, v in result["capacity_per_worker_core"].items())
            + "\n"
        )
    if "anchor" in result:
        a = result["anchor"]["bytetrack_on_oracle"]
        md += (
            f"\nAnchor (ByteTrack on the oracle's boxes of every frame, offline): MOTA "
            f"{a['mota']}, IDF1 {a['idf1']}, ID switches {a['id_switches']}, HOTA {a['hota']}\n"
        )
    if args.components:
        md += "\n" + "\n".join(components_markdown(result["components"])) + "\n"
    stem = out.with_suffix("")
    out.with_suffix(".md").write_text(md)
    plot_latency_cdf(result, Path(f"{stem}_latency_cdf.png"))
    plot_f1_vs_uplink(result, Path(f"{stem}_f1_vs_uplink.png"))
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(out)
    print(md)
    _note(f"saved {out}, {out.with_suffix('.md')} and the plots beside it")
    return 0
