"""``mobieye models``: profile the model ladder on this machine, or list it with cached figures.

The ladder is ``--ladder PATH[@IMGSZ][=ACCURACY],...`` (cheapest first), else ``ladder`` from the
configuration, else the shared data's default ladder. Figures are cached per model file, input
size, thread count and CPU, so a second run is instant unless ``--refresh``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mobieye.cli_flags import EPILOG, common
from mobieye.config import DetectorConfig, LadderModel, Settings
from mobieye.errors import ConfigError, ModelError
from mobieye.models.export import export_model
from mobieye.models.ladder import default_ladder, ladder_from_spec
from mobieye.models.profile import (
    DEFAULT_FRAMES,
    DEFAULT_REPEATS,
    ModelProfile,
    ProfileCache,
    default_video,
    format_profiles,
    load_frames,
    profile_ladder,
)
from mobieye.models.runtimes import RUNTIMES, parse_runtimes
from mobieye.models.throughput import (
    ThroughputRow,
    device_name,
    format_throughput,
    measure_throughput,
)
from mobieye.runtime import default_data_dir

MAX_BATCH = 64
THROUGHPUT_HELP = """\
Time the detector at several batch sizes, through the worker's own detector code, on real
frames. A worker batches the keyframes of its streams that are ready together into one call:
on a GPU that multiplies images/s; with ONNX Runtime on a small CPU it barely changes them.

An ultralytics architecture name such as yolo11s.yaml builds that model with untrained weights
(no download): its timings are real, its boxes are not. E.g. on a GPU machine:

  mobieye models throughput --ladder yolo11n.yaml@640,yolo11s.yaml@640 --device cpu,cuda \\
      --batch 1,4,8,16 --json out.json
"""


def add_models_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    models = sub.add_parser(
        "models",
        help="profile the model ladder on this machine (latency per rung), or list it",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    msub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")

    def ladder_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--ladder",
            metavar="PATH@IMGSZ,...",
            help="rungs, least accurate first: PATH[@IMGSZ][=ACCURACY],... "
            "(default: the config's ladder, else the shared data's default ladder)",
        )
        p.add_argument("--threads", type=int, help="CPU threads for inference (default 1)")

    profile = msub.add_parser(
        "profile",
        help="time detect() for every rung on real 640x480 frames; print a Markdown table",
        epilog=EPILOG,
    )
    common(profile)
    ladder_flags(profile)
    profile.add_argument("--video", type=Path, help="clip to take frames from (TUD-Stadtmitte)")
    profile.add_argument(
        "--repeats",
        type=int,
        default=DEFAULT_REPEATS,
        help=f"timed calls per rung after warm-up (default {DEFAULT_REPEATS})",
    )
    profile.add_argument(
        "--refresh", action="store_true", help="measure again even where figures are cached"
    )
    profile.add_argument(
        "--export",
        choices=["onnx", "openvino"],
        help="convert each rung to this format first (.pt: ultralytics export; cached)",
    )
    profile.add_argument(
        "--runtimes",
        default="all",
        metavar="LIST",
        help="runtimes to measure each ONNX rung on: 'all' (default) or a comma-separated list "
        f"of {', '.join(RUNTIMES)}. OpenVINO variants are built once into the cache (INT8: "
        "NNCF on TUD-Campus frames); each is scored by the F1 of its boxes against FP32's on "
        "the profiling clip, and the fastest within 0.02 F1 is what a worker with "
        "detector.runtime auto serves",
    )
    profile.add_argument("--json", type=Path, metavar="OUT", help="also write the profiles here")

    throughput = msub.add_parser(
        "throughput",
        help="time the detector at several batch sizes on CPU and/or GPU (what batching buys)",
        description=THROUGHPUT_HELP,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common(throughput)
    ladder_flags(throughput)
    throughput.add_argument(
        "--device",
        default="cpu",
        metavar="DEV,...",
        help="devices to compare in this run: cpu, cuda, cuda:N, mps (default cpu)",
    )
    throughput.add_argument(
        "--batch", default="1,2,4,8", metavar="N,...", help="batch sizes (default 1,2,4,8)"
    )
    throughput.add_argument(
        "--calls", type=int, default=10, help="timed calls per batch size (default 10)"
    )
    throughput.add_argument("--half", action="store_true", help="FP16 on CUDA devices")
    throughput.add_argument("--video", type=Path, help="clip to take frames from (TUD-Stadtmitte)")
    throughput.add_argument("--json", type=Path, metavar="OUT", help="also write the rows here")
    throughput.add_argument(
        "--markdown", type=Path, metavar="OUT", help="also write the table (and machine) here"
    )

    listing = msub.add_parser(
        "list", help="show the ladder with cached profiles, if any", epilog=EPILOG
    )
    common(listing)
    ladder_flags(listing)


def _ladder(settings: Settings, args: argparse.Namespace) -> list[LadderModel]:
    if args.ladder:
        # Untrained architectures only time the detector; profiles feed the controller.
        return ladder_from_spec(args.ladder, allow_untrained=args.models_command == "throughput")
    if settings.ladder:
        return list(settings.ladder)
    data_dir = default_data_dir()
    ladder = default_ladder(data_dir)
    if not ladder:
        raise ModelError(
            f"no model ladder: none of the default models is in {data_dir / 'models'}; pass "
            "--ladder PATH@IMGSZ,... or set ladder in the config (or MOBIEYE_DATA_DIR)"
        )
    return ladder


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_models(settings: Settings, args: argparse.Namespace) -> int:
    ladder = _ladder(settings, args)
    threads = settings.detector.threads
    if args.models_command == "throughput":
        return _throughput(ladder, threads, args)
    cache = ProfileCache()
    if args.models_command == "list":
        return _list(ladder, threads, cache)

    if args.repeats < 1:
        raise ModelError(f"--repeats must be at least 1, got {args.repeats}")
    if args.export:
        ladder = [export_model(m, args.export) for m in ladder]
    runtimes = parse_runtimes(args.runtimes)
    cached = set()
    if not args.refresh:
        cached = {
            f"{m.label}/{r}"
            for m in ladder
            for r in runtimes
            if cache.reusable(m, threads, args.repeats, r)
        }
    profiles = profile_ladder(
        ladder,
        threads,
        args.video,
        cache,
        refresh=args.refresh,
        progress=_err,
        repeats=args.repeats,
        runtimes=runtimes,
    )
    print(format_profiles(profiles, cached))
    print(f"\nMachine: {cache.machine}; {threads} thread(s); cache {cache.path}")
    if args.json:
        _write_json(args.json, profiles, cached, cache.machine, threads)
    return 0


def _write_json(
    out: Path, profiles: list[ModelProfile], cached: set[str], machine: str, threads: int
) -> None:
    doc: dict[str, Any] = {
        "machine": machine,
        "threads": threads,
        "profiles": [
            {**p.to_dict(), "cached": f"{p.label}/{p.runtime}" in cached} for p in profiles
        ],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")


def _int_list(flag: str, value: str) -> list[int]:
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(
            f"{flag} takes whole numbers separated by commas, not {value!r}"
        ) from None
    if not out or min(out) < 1 or max(out) > MAX_BATCH:
        raise ConfigError(f"{flag} values must be 1..{MAX_BATCH}, got {value!r}")
    return out


def _throughput(ladder: list[LadderModel], threads: int, args: argparse.Namespace) -> int:
    batches = _int_list("--batch", args.batch)
    if args.calls < 1:
        raise ConfigError(f"--calls must be at least 1, got {args.calls}")
    devices = [d.strip() for d in args.device.split(",") if d.strip()]
    for device in devices:  # refuse a typo before minutes of loading
        try:
            DetectorConfig(device=device, half=args.half and device.startswith("cuda"))
        except ValidationError:
            raise ConfigError(f"--device {device!r}: expected cpu, cuda, cuda:N or mps") from None
    frames = load_frames(args.video or default_video(), max(DEFAULT_FRAMES, max(batches)))
    rows: list[ThroughputRow] = []
    names = {}
    for device in devices:
        names[device] = device_name(device)
        for model in ladder:
            rows += measure_throughput(
                model, frames, batches, device=device, threads=threads, calls=args.calls,
                half=args.half and device.startswith("cuda"), progress=_err,
            )  # fmt: skip
    table = format_throughput(rows)
    h, w = frames[0].shape[:2]
    machine = "; ".join(f"{d}: {n}" for d, n in names.items())
    footer = (
        f"Machine: {machine}; {threads} CPU thread(s); frames {w}x{h} from "
        f"{(args.video or default_video()).name}; {args.calls} timed calls per row; "
        "vs batch 1 = images/s over the same model and device unbatched."
    )
    print(table + "\n\n" + footer)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        doc = {"devices": names, "threads": threads, "rows": [r.to_dict() for r in rows]}
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table + "\n\n" + footer + "\n")
    return 0


def _list(ladder: list[LadderModel], threads: int, cache: ProfileCache) -> int:
    lines = [
        "| rung | model | file | imgsz | accuracy | runtime | mean ms | p95 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, m in enumerate(ladder, 1):
        p = cache.chosen(m, threads)
        timing = f"{p.runtime} | {p.mean_ms:.2f} | {p.p95_ms:.2f}" if p else "- | - | -"
        lines.append(
            f"| {i} | {m.label} | {Path(m.path).name} | {m.imgsz} | {m.accuracy:g} | {timing} |"
        )
    print("\n".join(lines))
    print(
        f"\nTimings: cached profiles for {threads} thread(s) on {cache.machine} "
        "('-': not profiled yet; run mobieye models profile)"
    )
    return 0
