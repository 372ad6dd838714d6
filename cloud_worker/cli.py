"""``mobieye worker``: registered with the ``mobieye`` command as a plugin (pyproject's
``mobieye.commands`` entry points), so the core never imports the worker."""

from __future__ import annotations

import argparse

from mobieye.cli_flags import EPILOG, broker_flag, common, detector_flags
from mobieye.commands import Command
from mobieye.config import Settings


def _add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    worker = sub.add_parser(
        "worker",
        help="serve detection to edge agents (POST /offer, /healthz, /metrics)",
        epilog=EPILOG,
    )
    common(worker)
    detector_flags(worker)
    worker.add_argument("--host", help="bind address (default 127.0.0.1)")
    worker.add_argument("--port", type=int, help="HTTP port (default 8000)")
    worker.add_argument("--id", help="worker id (default host-port)")
    worker.add_argument(
        "--max-streams",
        type=int,
        help="refuse streams past this (default: the worker's measured capacity at the SLA)",
    )
    broker_flag(worker)


def _run(settings: Settings, args: argparse.Namespace) -> int:
    from cloud_worker.main import run_worker

    return run_worker(settings)


WORKER = Command("worker", order=1, add_parser=_add, run=_run)
