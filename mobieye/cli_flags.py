"""Flags several ``mobieye`` subcommands share, and the epilog that explains configuration."""

from __future__ import annotations

import argparse
from pathlib import Path

EPILOG = """\
Configuration: --config FILE (YAML), MOBIEYE_* environment variables (nested with __, e.g.
MOBIEYE_DETECTOR__IMGSZ=320; MOBIEYE_MODEL=PATH for the model), then flags.
"""


def common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML configuration file")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def detector_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("detector")
    g.add_argument("--model", help="detector: .pt, .onnx or OpenVINO export dir (or yolo11n.pt)")
    g.add_argument("--imgsz", type=int, help="inference size, a multiple of 32 (default 416)")
    g.add_argument("--threads", type=int, help="CPU threads for inference (default 1)")
    g.add_argument("--conf", type=float, help="confidence threshold (default 0.25)")
    g.add_argument("--keyframe-interval", type=int, help="detect at most every N frames")


def broker_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", help="MQTT broker of the fleet, mqtt://HOST:PORT (default: none)")


def edge_flags(p: argparse.ArgumentParser, source_required: bool) -> None:
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
    g.add_argument(
        "--local-model",
        metavar="PATH[@IMGSZ]",
        help="on-device detector (e.g. yolox_nano_dynamic_ultralytics.onnx@320): boxes for "
        "frames whose cloud result is late and for every frame while no worker is reachable",
    )
    g.add_argument(
        "--local-threads", type=int, help="CPU threads for the on-device model (default 1)"
    )
    g.add_argument(
        "--uplink",
        choices=["video", "keyframes"],
        help="video (default): every frame as WebRTC video; keyframes (edge-first): the edge "
        "tracks every frame and sends the worker only hard frames, as JPEG/WebP stills",
    )
    g.add_argument(
        "--uplink-kbps",
        type=float,
        help="with --uplink keyframes: the stills' budget (quality and rate follow it)",
    )
    g.add_argument("--still-format", choices=["jpeg", "webp"], help="stills' format (default webp)")
    g.add_argument("--report", type=Path, help="write the summary report (JSON) here")
    g.add_argument("--trace", type=Path, help="write one JSON line per frame here")
    g.add_argument("--record", type=Path, help="write the annotated video (.mp4) here")
