"""The subcommands of ``mobieye``: the core's own (bench, models, dashboard) and those the
edge and the worker contribute as plugins, through the ``mobieye.commands`` entry points in
pyproject.toml (the core never imports edge or worker code)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points

from mobieye.config import Settings

log = logging.getLogger(__name__)

ENTRY_POINTS = "mobieye.commands"
SubParsers = argparse._SubParsersAction  # argparse names no public type for it


@dataclass(frozen=True)
class Command:
    name: str
    order: int  # position in ``mobieye --help``
    add_parser: Callable[[SubParsers[argparse.ArgumentParser]], None]
    run: Callable[[Settings, argparse.Namespace], int]
    # Called when SIGTERM or SIGINT stopped the command before it could finish on its own
    # (the edge writes a report that says so).
    interrupted: Callable[[Settings, argparse.Namespace], None] | None = None


def _bench(sub: SubParsers[argparse.ArgumentParser]) -> None:
    from mobieye.bench.cli import add_bench_parser

    add_bench_parser(sub)


def _run_bench(settings: Settings, args: argparse.Namespace) -> int:
    from mobieye.bench import run_bench

    # SIGTERM unwinds like Ctrl-C (mobieye.cli): every worker, agent and namespace it started
    # is stopped on the way out.
    return run_bench(settings, args)


def _models(sub: SubParsers[argparse.ArgumentParser]) -> None:
    from mobieye.models.cli import add_models_parser

    add_models_parser(sub)


def _run_models(settings: Settings, args: argparse.Namespace) -> int:
    from mobieye.models.cli import run_models

    return run_models(settings, args)


def _dashboard(sub: SubParsers[argparse.ArgumentParser]) -> None:
    from mobieye.dashboard.cli import add_dashboard_parser

    add_dashboard_parser(sub)


def _run_dashboard(settings: Settings, args: argparse.Namespace) -> int:
    from mobieye.dashboard.cli import run_dashboard_command

    return run_dashboard_command(settings, args)


CORE = (
    Command("bench", order=3, add_parser=_bench, run=_run_bench),
    Command("models", order=5, add_parser=_models, run=_run_models),
    Command("dashboard", order=4, add_parser=_dashboard, run=_run_dashboard),
)


def all_commands() -> list[Command]:
    """The core's commands and every installed plugin's, in ``--help`` order."""
    found = list(CORE)
    for ep in entry_points(group=ENTRY_POINTS):
        command = ep.load()
        if not isinstance(command, Command):
            log.warning("entry point %s is not a mobieye Command; ignored", ep.value)
            continue
        found.append(command)
    if len(found) == len(CORE):
        log.warning("no edge or worker commands are installed: run `pip install -e .` (or "
                    "`make setup`) so their entry points are registered")  # fmt: skip
    return sorted(found, key=lambda c: c.order)
