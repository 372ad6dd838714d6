"""The real parts some tests need (a broker, a browser, the data, root), how to tell whether
this machine has them, and how to get them. A test that lacks one skips with
:func:`need`'s message, and the suite's summary (tests/conftest.py) lists them with the one
command that installs what is missing."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from mobieye.mqtt.broker import MOSQUITTO
from mobieye.runtime import default_data_dir

CHROMIUM = "/usr/bin/chromium"
TAG = "[real part: "


@dataclass(frozen=True)
class Part:
    name: str
    what: str
    install: str  # how to get it ("" for what no command installs)
    apt: tuple[str, ...] = ()  # Debian packages that bring it

    def present(self) -> bool:
        return _CHECKS[self.name]()


PARTS = {
    p.name: p
    for p in (
        Part("mosquitto", f"Mosquitto at {MOSQUITTO}", "apt-get install -y mosquitto",
             ("mosquitto",)),
        Part("mosquitto-clients", "mosquitto_sub", "apt-get install -y mosquitto-clients",
             ("mosquitto-clients",)),
        Part("chromium", f"Chromium at {CHROMIUM}", "apt-get install -y chromium", ("chromium",)),
        Part("openssl", "the openssl command", "apt-get install -y openssl", ("openssl",)),
        Part("data", f"the real test data at {default_data_dir()}",
             "make test-data (needs internet), or set MOBIEYE_DATA_DIR to a copy"),
        Part("root", "root (network namespaces)", "run the suite as root: sudo make test"),
    )
}  # fmt: skip

_CHECKS = {
    "mosquitto": lambda: os.access(MOSQUITTO, os.X_OK),
    "mosquitto-clients": lambda: shutil.which("mosquitto_sub") is not None,
    "chromium": lambda: os.access(CHROMIUM, os.X_OK),
    "openssl": lambda: shutil.which("openssl") is not None,
    "data": lambda: (default_data_dir() / "models").is_dir(),
    "root": lambda: os.geteuid() == 0,
}


def reason(name: str) -> str:
    part = PARTS[name]
    return f"{TAG}{name}] needs {part.what}: {part.install}"


def need(*names: str) -> None:
    """Skip the calling test unless every named part is here."""
    for name in names:
        if not PARTS[name].present():
            pytest.skip(reason(name))


def skip_unless(*names: str) -> pytest.MarkDecorator:
    """The same, as a mark for a test or a module."""
    missing = [n for n in names if not PARTS[n].present()]
    return pytest.mark.skipif(bool(missing), reason=reason(missing[0]) if missing else "")


def install_command(names: set[str]) -> str:
    apt = sorted({pkg for n in names for pkg in PARTS[n].apt})
    out = []
    if apt:
        out.append(f"sudo apt-get install -y {' '.join(apt)}  (or, as root: "
                   "MOBIEYE_INSTALL_SYSTEM_DEPS=1 make test)")  # fmt: skip
    out += [PARTS[n].install for n in sorted(names) if not PARTS[n].apt]
    return "; ".join(out)


def data_file(*parts: str) -> Path:
    return default_data_dir().joinpath(*parts)
