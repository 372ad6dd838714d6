"""`mobieye bench --outage START:SECONDS`: the cloud goes silent for a while, then comes back.

Over an emulated link (``--link``) the bench cuts the wire between edge and worker hosts: every
packet either way is lost, as on a dead link, and the link comes back as it was.

On loopback (no wire to cut) it freezes the worker processes (SIGSTOP, then SIGCONT): every
packet an edge sends reaches a socket nobody reads and nothing comes back, as when the link
drops, and the worker picks up where it was afterwards. (It differs from a cut wire in one way:
the worker's kernel buffers what arrives meanwhile, so the first frames after the outage may be
old ones; edges that failed over by then have moved to a new connection anyway.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mobieye.errors import MobiEyeError

_SPEC = re.compile(r"^(?P<start>\d+(?:\.\d+)?):(?P<seconds>\d+(?:\.\d+)?)$")


@dataclass(frozen=True)
class Outage:
    start_s: float  # after the edges start
    seconds: float


def parse_outage(text: str, duration_s: float) -> Outage:
    m = _SPEC.match(text.strip())
    if m is None:
        raise MobiEyeError(f"--outage takes START:SECONDS (e.g. 8:5), got {text!r}")
    outage = Outage(float(m["start"]), float(m["seconds"]))
    if outage.seconds <= 0:
        raise MobiEyeError("--outage: SECONDS must be more than 0")
    if outage.start_s + outage.seconds >= duration_s:
        raise MobiEyeError(
            f"--outage {text}: it must end before the run does ({duration_s:g} s per mode, "
            "--duration); the recovery after it is part of what is measured"
        )
    return outage
