"""``mobieye bench``: MobiEye against the conventional cloud pipeline and DeepStream-style fixed
intervals, on the same clip, in one run, on loopback or an emulated link.

Everything is checked before anything runs (clip, ground truth, modes, link); the results are
written at the end, atomically: JSON at ``--out``, a Markdown table and PNG plots beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from mobieye.bench.components import components_markdown, machine, measure_components
from mobieye.bench.modes import MODE_NAMES, mode_settings
from mobieye.bench.oracle import load_mot_gt, oracle_boxes, video_info
from mobieye.bench.report import markdown, plot_f1_vs_uplink, plot_latency_cdf
from mobieye.bench.run import Topology, no_link, run_mode
from mobieye.bench.score import score_mode
from mobieye.config import LadderModel, Settings
from mobieye.detector import resolve_model
from mobieye.errors import MobiEyeError
from mobieye.runtime import default_data_dir


def _note(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def resolve_ladder(settings: Settings, spec: str | None) -> list[LadderModel]:
    from mobieye.models import default_ladder, ladder_from_spec

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


def _topology(link: str) -> AbstractContextManager[Topology]:
    if link == "loopback":
        return no_link()
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


def run_bench(settings: Settings, args: argparse.Namespace) -> int:
    video = Path(args.video)
    if not video.is_file():
        raise MobiEyeError(f"bench video {video} does not exist")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODE_NAMES]
    if unknown:
        raise MobiEyeError(
            f"unknown mode(s) {', '.join(unknown)}: choose from {', '.join(MODE_NAMES)}"
        )
    n_frames, width, height, _ = video_info(video)
    gt = load_mot_gt(Path(args.gt), n_frames, width, height) if args.gt else None
    _check_link(args.link)
    ladder = resolve_ladder(settings, args.models)
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
        "streams": args.streams,
        "link": args.link,
        "sla_ms": sla,
        "min_score": args.min_score,
        "duration_s": args.duration,
        "ladder": [{"label": m.label, "accuracy": m.accuracy} for m in ladder],
        "oracle": best.label,
        "modes": {},
    }
    if args.components:
        detector = settings.detector.model_copy(update={"model": best.path, "imgsz": best.imgsz})
        result["components"] = measure_components(
            settings.model_copy(update={"detector": detector}), video, args.receive_seconds, _note
        )

    with _topology(args.link) as topology:
        for mode in modes:
            _note(f"{mode}: {args.streams} stream(s) for {args.duration:.0f} s over {args.link}")
            run = asyncio.run(
                run_mode(
                    mode_settings(settings, mode, ladder, args.fixed_interval),
                    mode, topology, video, args.duration, args.streams,
                )
            )  # fmt: skip
            m = score_mode(run, oracle, gt, sla, args.min_score)
            result["modes"][mode] = m
            lat = m["latency_ms"]
            _note(
                f"  {mode}: F1 vs oracle {m['f1_vs_oracle']:.3f}, p95 {lat['p95']} ms, "
                f"SLA misses {m['sla_miss_ratio']:.1%}, detector {m['detector_fraction']}, "
                f"uplink {m['uplink_kbps']} kbps"
            )

    out.parent.mkdir(parents=True, exist_ok=True)
    md = markdown(result)
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
