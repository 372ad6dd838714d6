"""`mobieye`'s subcommands: the core's own and the edge's and worker's plugins, all found."""

from __future__ import annotations

import subprocess
import sys

from mobieye.cli import build_parser
from mobieye.commands import all_commands


def test_every_subcommand_is_there_in_order() -> None:
    names = [c.name for c in all_commands()]
    assert names == ["demo", "worker", "edge", "bench", "dashboard", "models"]


def test_help_lists_them_and_each_parses_its_flags() -> None:
    parser = build_parser()
    args = parser.parse_args(["worker", "--port", "8123", "--max-streams", "3"])
    assert args.command == "worker" and args.port == 8123 and args.max_streams == 3
    args = parser.parse_args(["edge", "--source", "clip.mp4", "--worker", "auto"])
    assert args.command == "edge" and args.worker == "auto"
    out = subprocess.run([sys.executable, "-m", "mobieye.cli", "--help"], capture_output=True,
                         text=True, timeout=60, check=True).stdout  # fmt: skip
    for name in ("demo", "worker", "edge", "bench", "dashboard", "models"):
        assert name in out
