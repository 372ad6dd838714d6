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

from mobieye.config import LadderModel, Settings
from mobieye.errors import ModelError
from mobieye.models import (
    DEFAULT_REPEATS,
    ModelProfile,
    ProfileCache,
    default_ladder,
    export_model,
    format_profiles,
    ladder_from_spec,
    profile_ladder,
)
from mobieye.runtime import default_data_dir


def add_models_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from mobieye.cli import EPILOG, _common

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
    _common(profile)
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
    profile.add_argument("--json", type=Path, metavar="OUT", help="also write the profiles here")

    listing = msub.add_parser(
        "list", help="show the ladder with cached profiles, if any", epilog=EPILOG
    )
    _common(listing)
    ladder_flags(listing)


def _ladder(settings: Settings, args: argparse.Namespace) -> list[LadderModel]:
    if args.ladder:
        return ladder_from_spec(args.ladder)
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
    cache = ProfileCache()
    if args.models_command == "list":
        return _list(ladder, threads, cache)

    if args.repeats < 1:
        raise ModelError(f"--repeats must be at least 1, got {args.repeats}")
    if args.export:
        ladder = [export_model(m, args.export) for m in ladder]
    cached = set()
    if not args.refresh:
        cached = {m.label for m in ladder if cache.reusable(m, threads, args.repeats)}
    profiles = profile_ladder(
        ladder,
        threads,
        args.video,
        cache,
        refresh=args.refresh,
        progress=_err,
        repeats=args.repeats,
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
        "profiles": [{**p.to_dict(), "cached": p.label in cached} for p in profiles],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")


def _list(ladder: list[LadderModel], threads: int, cache: ProfileCache) -> int:
    lines = [
        "| rung | model | file | imgsz | accuracy | mean ms | p95 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, m in enumerate(ladder, 1):
        p = cache.get(m, threads)
        timing = f"{p.mean_ms:.2f} | {p.p95_ms:.2f}" if p else "- | -"
        lines.append(
            f"| {i} | {m.label} | {Path(m.path).name} | {m.imgsz} | {m.accuracy:g} | {timing} |"
        )
    print("\n".join(lines))
    print(
        f"\nTimings: cached profiles for {threads} thread(s) on {cache.machine} "
        "('-': not profiled yet; run mobieye models profile)"
    )
    return 0
