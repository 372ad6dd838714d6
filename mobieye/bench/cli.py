"""``mobieye bench``'s flags (the run itself: mobieye.bench)."""

from __future__ import annotations

import argparse

from mobieye.cli_flags import EPILOG, common, detector_flags


def add_bench_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    common(bench)
    detector_flags(bench)
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
        "--load", choices=("agents", "replay"), default="agents",
        help="agents (default): one edge agent process per stream, capturing and encoding the "
        "clip (its CPU shares the machine with the worker); replay: all streams in one process "
        "sending the clip encoded once (a few ms of CPU per frame less per stream: measures the "
        "worker, not the machine). The table shows the load's own CPU per stream either way",
    )  # fmt: skip
    bench.add_argument(
        "--pin-worker-cores", type=int, metavar="N",
        help="pin the worker(s) to the first N cores and the load to the rest (taskset's "
        "sched_setaffinity; loopback only): the figures then hold per worker core",
    )  # fmt: skip
    bench.add_argument(
        "--replay-codec", choices=("vp8", "h264"), default="vp8",
        help="codec of the replayed clip (default vp8; the worker must accept it)",
    )  # fmt: skip
    bench.add_argument(
        "--capacity", action="store_true",
        help="find each mode's capacity: stream counts doubling from 1 while F1 vs oracle >= "
        "0.9 and p95 <= --capacity-p95 hold, then bisected; prints streams per worker and "
        "per worker core (use --load replay, so the load does not eat the worker's CPU)",
    )  # fmt: skip
    bench.add_argument(
        "--capacity-max", type=int, default=32,
        help="the most streams --capacity tries (default 32)",
    )  # fmt: skip
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
        "--outage", metavar="START:SECONDS",
        help="the cloud goes silent SECONDS long, START seconds after the edges start (the "
        "workers are frozen: nothing they were sent is answered), then comes back; every mode "
        "is also scored over that window alone (outage.f1_vs_oracle, frames_without_boxes)",
    )  # fmt: skip
    bench.add_argument(
        "--local-model", metavar="PATH[@IMGSZ]",
        help="give every mode's edges this on-device model (late cloud results are duplicated "
        "by it, MDInference-style); local-only runs the ladder's cheapest without it",
    )  # fmt: skip
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
    soak.add_argument(
        "--soak", nargs="?", type=float, const=10.0, metavar="MINUTES",
        help="run the soak for MINUTES (default 10; --duration, in seconds, wins) instead of "
        "the modes; it also records the worker's RSS, file descriptors, threads, asyncio tasks "
        "and the latency per minute, and fails on RSS growth over 5%% after the first minute "
        "or on latency drifting up",
    )  # fmt: skip
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
        help="frames since the boxes' detection, p95 of any window after the first, where "
        "the streams' controllers settle (default 45, the age the dashboard calls stale)",
    )  # fmt: skip
    soak.add_argument(
        "--max-box-age", type=float, default=90.0,
        help="the oldest boxes any result may show, in frames (default 90)",
    )  # fmt: skip
