"""docker/systemd/mobieye-worker.service against the code: its variables are real settings that
load, its command line parses with the real CLI, and systemd waits out the worker's drain."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from tests.docker.test_compose import PROCESS_ENV, load_with_env, parse_cli, setting_path

UNIT = Path(__file__).resolve().parents[2] / "docker/systemd/mobieye-worker.service"
OTHER_ENV = {"YOLO_OFFLINE", "YOLO_AUTOINSTALL"}  # ultralytics' own, kept offline


def directives() -> dict[str, list[str]]:
    """Key -> every value it is given in the [Service] section (Environment repeats)."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def environment() -> dict[str, str]:
    return dict(v.split("=", 1) for v in directives()["Environment"])


def test_every_variable_is_a_setting_and_they_load(monkeypatch: pytest.MonkeyPatch) -> None:
    env = environment()
    for key in env:
        if key in PROCESS_ENV or key in OTHER_ENV:
            continue
        assert setting_path(key) is not None, f"{key} is no setting of mobieye.config.Settings"
    settings = load_with_env(monkeypatch, {k: v for k, v in env.items() if k.startswith("MOBIEYE_")
                                           and k not in PROCESS_ENV})  # fmt: skip
    assert settings.worker.host == "0.0.0.0" and not settings.webrtc.loopback_only


def test_the_command_line_parses_as_a_worker() -> None:
    argv = shlex.split(directives()["ExecStart"][0])
    assert Path(argv[0]).name == "mobieye"
    args = parse_cli(argv[1:])
    assert args.command == "worker"


def test_systemd_waits_for_the_drain(monkeypatch: pytest.MonkeyPatch) -> None:
    d = directives()
    env = environment()
    settings = load_with_env(monkeypatch, {k: v for k, v in env.items()
                                           if k.startswith("MOBIEYE_WORKER__")})  # fmt: skip
    w = settings.worker
    assert d["KillSignal"] == ["SIGTERM"]  # the worker drains on SIGTERM (cloud_worker/main.py)
    stop_s = float(d["TimeoutStopSec"][0])
    assert stop_s > w.drain_timeout_s + w.shutdown_timeout_s + 5, (stop_s, w.drain_timeout_s)
    # Secrets come from a file, not the unit (systemctl show prints Environment).
    assert d["EnvironmentFile"] and not any("TOKEN" in k or "PASSWORD" in k for k in env)
