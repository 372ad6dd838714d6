"""``mobieye edge``: stream one source to one worker."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from typing import Any

from edge_agent.agent import EdgeAgent, EdgeOutputs
from edge_agent.sources import VideoSource, parse_source
from mobieye.config import Settings
from mobieye.errors import ConfigError, SourceError
from mobieye.fleet.allowlist import UrlAllowlist
from mobieye.fleet.directory import WorkerDirectory
from mobieye.mqtt.preflight import check_broker

log = logging.getLogger(__name__)


def open_source(settings: Settings) -> VideoSource:
    if not settings.edge.source:
        raise SourceError("no video source given: pass --source FILE|WEBCAM_INDEX|URL")
    return VideoSource(
        parse_source(settings.edge.source),
        fps=settings.edge.fps,
        loop_file=settings.edge.loop,
        max_width=settings.edge.max_width,
        reconnect_s=settings.edge.reconnect_s,
        open_timeout_s=settings.edge.open_timeout_s,
    )


def outputs_from(args: argparse.Namespace, status: bool) -> EdgeOutputs:
    return EdgeOutputs(trace=args.trace, report=args.report, record=args.record, status=status)


def print_edge_first_summary(report: dict[str, Any]) -> None:
    st, came = report["stills"], report["boxes_from"]
    shown = sum(came.values())
    with_boxes = st["frames_shown_with_boxes"]
    kf = st["keyframe_latency_ms"]
    size = f"{st['bytes_mean'] / 1000:.1f} KB" if st["bytes_mean"] else "-"
    print(
        f"\n{shown} frames shown, {with_boxes} with boxes ({with_boxes / max(1, shown):.1%}): "
        f"from the cloud's stills {came['tracker']}, the on-device model {came['local']}, none "
        f"yet {came['none']}; {st['sent']} stills ({size} each, quality {st['quality']} at the "
        f"end), keyframe round trip p50 {kf['p50']} ms, p95 {kf['p95']} ms; uplink "
        f"{report['uplink_kbps']} kbps; edge CPU {report['edge_cpu_ms_per_frame']} ms/frame; "
        f"model {report['model']}",
        file=sys.stderr,
    )


def print_summary(report: dict[str, Any]) -> None:
    if report.get("stills"):
        print_edge_first_summary(report)
        return
    lat, age = report["latency_ms"], report["box_age_frames"]
    print(
        f"\n{report['frames_with_result']}/{report['frames_captured']} frames got results "
        f"({report['result_ratio']:.1%}), {report['frames_with_boxes']} with boxes; "
        f"latency p50 {lat['p50']} ms, p95 {lat['p95']} ms, p99 {lat['p99']} ms; "
        f"detector on {report['detector_runs']} frames ({report['detector_fraction']:.1%}); "
        f"boxes p50 {age['p50']}, p95 {age['p95']}, max {age['max']} frames old; "
        f"uplink {report['uplink_kbps']} kbps; model {report['model']}",
        file=sys.stderr,
    )
    classes = report["classes_seen"]
    if classes:
        top = ", ".join(f"{k} {v}" for k, v in list(classes.items())[:8])
        print(f"boxes by class: {top}", file=sys.stderr)


async def run_edge(settings: Settings, args: argparse.Namespace) -> int:
    # A live source that is down at start is retried for edge.open_timeout_s: off the loop.
    source = await asyncio.to_thread(open_source, settings)
    log.info(
        "streaming %s (%dx%d at %.1f fps) to %s",
        source.spec.label,
        source.width,
        source.height,
        source.fps,
        settings.edge.worker_url,
    )
    directory = None
    if settings.edge.worker_url == "auto":
        if not settings.mqtt.broker:
            raise ConfigError(
                "--worker auto needs the fleet's broker: pass --broker mqtt://HOST:PORT"
            )
        await check_broker(settings.mqtt)
        allowlist = UrlAllowlist.from_config(settings.fleet)
        directory = WorkerDirectory(settings.mqtt, f"mobieye-edge-{os.getpid()}", allowlist)
    agent = EdgeAgent(settings, source, outputs_from(args, status=True), directory)
    report = await agent.run(args.duration)
    print_summary(report)
    if args.report is None:
        log.debug("report: %s", json.dumps(report))
    return 0 if report["frames_with_result"] else 1
