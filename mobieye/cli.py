"""The ``mobieye`` command: ``demo``, ``worker``, ``edge``, ``bench``, ``dashboard``, ``models``
(mobieye.commands finds them; the edge's and the worker's are plugins).

Every subcommand reads the same configuration (``--config`` YAML, ``MOBIEYE_*`` environment,
then flags); a flag left out keeps the lower layers' value.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

from mobieye import __version__
from mobieye.cli_flags import EPILOG
from mobieye.commands import Command, all_commands
from mobieye.config import load_settings
from mobieye.errors import MobiEyeError
from mobieye.runtime import interrupt_on_sigterm, setup_logging

log = logging.getLogger("mobieye")


def build_parser(commands: Sequence[Command] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mobieye",
        description="Real-time object detection offloaded over WebRTC: the cloud detects on "
        "keyframes and tracks every frame in between.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mobieye {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in all_commands() if commands is None else commands:
        command.add_parser(sub)
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
        "local_model": ("edge", "local_model"),
        "local_threads": ("edge", "local_threads"),
        "uplink": ("edge", "uplink"),
        "uplink_kbps": ("controller", "uplink_kbps"),
        "still_format": ("edge", "still_format"),
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
    # SIGTERM unwinds like Ctrl-C (finally blocks run) until a command installs its own
    # handling; while the command line is parsed both wait, so that whenever one comes, the
    # command's own clean-up (the edge's report) sees it.
    interrupt_on_sigterm()
    stops = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    try:
        commands = {c.name: c for c in all_commands()}
        args = build_parser(list(commands.values())).parse_args(argv)
        command = commands[args.command]
        settings = None
        try:
            settings = load_settings(args.config, overrides_from(args))
            setup_logging(settings.log_level)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)  # a pending one lands here
            return command.run(settings, args)
        except MobiEyeError as exc:
            print(f"mobieye {args.command}: error: {exc}", file=sys.stderr)
            return 2
        except (KeyboardInterrupt, asyncio.CancelledError):  # stopped before it finished
            if settings is not None and command.interrupted is not None:
                command.interrupted(settings, args)
            return 130
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)


if __name__ == "__main__":
    sys.exit(main())
