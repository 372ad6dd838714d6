"""The benchmark's topology over an emulated link: worker and edge agents in separate network
namespaces joined by ``mobieye.netem``'s wire (delay, jitter, loss, rate)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from mobieye.netem import WORKER_IP, EmulatedLink


class LinkedHosts:
    worker_host = WORKER_IP
    loopback = False

    def __init__(self, link: EmulatedLink) -> None:
        self.link = link

    def cut_wire(self, down: bool) -> bool:
        """--outage cuts the wire itself."""
        self.link.cut(down)
        return True

    def popen_worker(self, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        return self.link.popen(self.link.worker_ns, argv, env=env)

    def popen_edge(self, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        return self.link.popen(self.link.edge_ns, argv, env=env)


@contextmanager
def emulated_topology(profile: str, seed: int = 0) -> Iterator[LinkedHosts]:
    with EmulatedLink(profile, seed=seed) as link:
        yield LinkedHosts(link)
