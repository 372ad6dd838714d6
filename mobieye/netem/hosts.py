"""Two emulated hosts, edge and worker, joined by an emulated link.

``EmulatedLink`` creates one network namespace per host, a TAP interface ``wire0`` in each
(10.77.0.1/24 on the edge, 10.77.0.2/24 on the worker) and the relay that joins them
(``mobieye.netem.wire``). Commands run inside a host with ``link.popen(link.edge_ns, argv)``.

WebRTC inside the namespaces: aioice gathers host candidates from every interface except
127.0.0.1, and inside a host the only other interface is ``wire0`` (IPv6 is disabled there),
so ICE uses the emulated link with no configuration. Processes in the namespaces must not call
``mobieye.webrtc.ice.confine_to_loopback()`` (``webrtc.loopback_only: false``): it would offer
only 127.0.0.1, which is each host's own private loopback.

Neighbour (ARP) entries are static: a lost ARP exchange stalls a flow for a second or more,
which is a property of the benchmark's set-up, not of the emulated link. Frames still cross
the wire untouched otherwise.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import mobieye.netem.netns as netns
from mobieye.netem.profiles import LinkProfile, get_profile
from mobieye.netem.shaper import DirectionStats
from mobieye.netem.tap import TUN_DEVICE, open_tap
from mobieye.netem.wire_process import WireProcess
from mobieye.runtime import die_with_parent

logger = logging.getLogger(__name__)

EDGE_IP = "10.77.0.1"
WORKER_IP = "10.77.0.2"
PREFIX_LEN = 24
INTERFACE = "wire0"
# Locally administered, fixed MACs so the static neighbour entries need no lookup.
EDGE_MAC = "02:4d:45:00:00:01"
WORKER_MAC = "02:4d:45:00:00:02"
NAMESPACE_PREFIX = "mobieye-"
_NAME_RE = re.compile(r"^mobieye-(?:edge|worker)-(\d+)(?:-\d+)?$")
_CAP_NET_ADMIN = 12
_CAP_SYS_ADMIN = 21
_STOP_TIMEOUT_S = 3.0

_serial = itertools.count()


def check_can_emulate(link_name: str | None = None) -> None:
    """Raise a clear error, before anything is created, when links cannot be emulated here."""
    what = f"--link {link_name}" if link_name else "link emulation"
    hint = "(run as root or use --link loopback)"
    if not sys.platform.startswith("linux"):
        raise RuntimeError(f"{what} needs Linux network namespaces (use --link loopback)")
    if os.geteuid() != 0:
        raise PermissionError(f"{what} needs root to create network namespaces {hint}")
    missing = [
        name
        for name, bit in (("CAP_NET_ADMIN", _CAP_NET_ADMIN), ("CAP_SYS_ADMIN", _CAP_SYS_ADMIN))
        if not _has_capability(bit)
    ]
    if missing:
        raise PermissionError(
            f"{what} needs {' and '.join(missing)} to create network namespaces {hint}"
        )
    if netns.ip_binary() is None:
        raise RuntimeError(f"{what} needs the `ip` command from iproute2 (or use --link loopback)")
    try:
        os.close(os.open(TUN_DEVICE, os.O_RDWR))
    except OSError as exc:
        raise RuntimeError(
            f"{what} needs {TUN_DEVICE} (the tun module) for TAP devices: {exc.strerror}"
            " (or use --link loopback)"
        ) from None


def _has_capability(bit: int) -> bool:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> bit & 1)
    except OSError:
        pass
    return True  # cannot tell: let the real operation report


def cleanup_stale_namespaces() -> list[str]:
    """Delete namespaces left by EmulatedLinks whose process died; the names deleted."""
    removed = []
    for name in netns.names():
        match = _NAME_RE.match(name)
        if match is None or _pid_alive(int(match.group(1))):
            continue
        try:
            netns.delete(name)
            removed.append(name)
        except RuntimeError as exc:
            logger.warning("could not delete stale namespace %s: %s", name, exc)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class LinkStats:
    """Counters of an emulated link, per direction."""

    edge_to_worker: DirectionStats
    worker_to_edge: DirectionStats

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {
            "edge_to_worker": self.edge_to_worker.as_dict(),
            "worker_to_edge": self.worker_to_edge.as_dict(),
        }


class EmulatedLink:
    """Edge and worker network namespaces joined by an emulated link; a sync context manager.

    ``with EmulatedLink(get_profile("lte"), seed=0) as link:`` then start processes with
    ``link.popen(link.worker_ns, [...])``. Leaving the block (normally or by an exception)
    stops those processes and any others left in the namespaces, stops the relay and deletes
    both namespaces.
    """

    edge_ip = EDGE_IP
    worker_ip = WORKER_IP

    def __init__(self, profile: LinkProfile | str, seed: int = 0) -> None:
        self.profile = get_profile(profile) if isinstance(profile, str) else profile
        if not self.profile.emulated:
            raise ValueError(
                f"link {self.profile.name!r} is not emulated: run both sides on 127.0.0.1"
            )
        self.seed = seed
        serial = next(_serial)
        suffix = f"{os.getpid()}" + (f"-{serial}" if serial else "")
        self.edge_ns = f"{NAMESPACE_PREFIX}edge-{suffix}"
        self.worker_ns = f"{NAMESPACE_PREFIX}worker-{suffix}"
        # Temporary names in the caller's namespace, renamed to wire0 once moved.
        self._taps = {
            self.edge_ns: f"mbe{os.getpid()}e{serial}",
            self.worker_ns: f"mbe{os.getpid()}w{serial}",
        }
        self._created: list[str] = []
        self._wire: WireProcess | None = None
        self._final_stats: LinkStats | None = None
        self._procs: list[subprocess.Popen[Any]] = []
        self._open = False

    def __enter__(self) -> EmulatedLink:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.close()
        except RuntimeError:
            if exc is None:
                raise
            # The body's exception matters more; the cleanup failure is already logged.

    def open(self) -> None:
        """Create the namespaces, interfaces and relay; undoes partial work on failure."""
        if self._open:
            raise RuntimeError("EmulatedLink is already open")
        check_can_emulate(self.profile.name)
        cleanup_stale_namespaces()
        self._open = True
        try:
            self._build()
        except BaseException:
            # A cleanup failure is logged; the build error is the one to report.
            with contextlib.suppress(RuntimeError):
                self.close()
            raise

    def _build(self) -> None:
        ends = (
            (self.edge_ns, EDGE_IP, EDGE_MAC, WORKER_IP, WORKER_MAC),
            (self.worker_ns, WORKER_IP, WORKER_MAC, EDGE_IP, EDGE_MAC),
        )
        for ns, *_ in ends:
            netns.add(ns)
            self._created.append(ns)
        fds: list[int] = []
        try:
            for ns, _ip, _mac, *_ in ends:
                fds.append(open_tap(self._taps[ns]))
                netns.run_ip("link", "set", self._taps[ns], "netns", ns)
            for ns, ip, mac, peer_ip, peer_mac in ends:
                self._configure(ns, ip, mac, peer_ip, peer_mac)
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        # WireProcess owns the fds from here on (it closes ours even if it fails).
        self._wire = WireProcess(fds[0], fds[1], self.profile, self.seed)

    def _configure(self, ns: str, ip: str, mac: str, peer_ip: str, peer_mac: str) -> None:
        # IPv6 off: no router solicitations or DAD on the wire, and one address family for ICE.
        for key in ("net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"):
            netns.sysctl(ns, key, "1")
        netns.run_ip("link", "set", "lo", "up", namespace=ns)
        netns.run_ip("link", "set", self._taps[ns], "name", INTERFACE, "address", mac, namespace=ns)
        netns.run_ip("addr", "add", f"{ip}/{PREFIX_LEN}", "dev", INTERFACE, namespace=ns)
        netns.run_ip("link", "set", INTERFACE, "up", namespace=ns)
        netns.run_ip(
            "neigh", "replace", peer_ip, "lladdr", peer_mac, "dev", INTERFACE,
            "nud", "permanent", namespace=ns,
        )  # fmt: skip

    def namespace(self, host: str) -> str:
        """The namespace for ``host``: "edge", "worker" or one of the namespace names."""
        aliases = {"edge": self.edge_ns, "worker": self.worker_ns}
        ns = aliases.get(host, host)
        if ns not in aliases.values():
            raise ValueError(f"{host!r} is not a host of this link (edge, worker)")
        return ns

    def exec_argv(self, host: str, argv: Sequence[str]) -> list[str]:
        """The command line that runs ``argv`` inside ``host``'s namespace."""
        return netns.exec_argv(self.namespace(host), argv)

    def popen(self, ns: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside namespace ``ns`` (a name, or "edge"/"worker").

        The process is stopped when the link closes, if it is still running.
        """
        if not self._open or self._wire is None:
            raise RuntimeError("EmulatedLink is not open")
        kwargs.setdefault("preexec_fn", die_with_parent)
        proc: subprocess.Popen[Any] = subprocess.Popen(self.exec_argv(ns, argv), **kwargs)
        self._procs.append(proc)
        return proc

    def cut(self, cut: bool) -> None:
        """Cut the wire between the hosts (nothing gets through either way) or restore it."""
        if self._wire is None:
            raise RuntimeError("EmulatedLink is not open")
        self._wire.cut(cut)

    def stats(self) -> LinkStats:
        """Frames forwarded and dropped per direction (final counters once closed)."""
        if self._final_stats is not None:
            return self._final_stats
        if self._wire is None:
            raise RuntimeError("EmulatedLink is not open")
        wire = self._wire.stats()
        return LinkStats(edge_to_worker=wire.a_to_b, worker_to_edge=wire.b_to_a)

    def close(self) -> None:
        """Stop processes and the relay, delete the namespaces. Idempotent.

        Every step runs even when an earlier one fails; RuntimeError at the end if a namespace
        could not be deleted.
        """
        if not self._open:
            return
        self._open = False
        self._stop_processes()
        if self._wire is not None:
            final = self._wire.close()
            if final is not None:
                self._final_stats = LinkStats(
                    edge_to_worker=final.a_to_b, worker_to_edge=final.b_to_a
                )
            self._wire = None
        failed = []
        for ns in reversed(self._created):
            try:
                netns.delete(ns)
            except RuntimeError as exc:
                if netns.exists(ns):
                    logger.error("could not delete namespace %s: %s", ns, exc)
                    failed.append(ns)
        self._created.clear()
        if failed:
            raise RuntimeError(f"could not delete network namespaces {failed}")

    def _stop_processes(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()
        # Children of those processes (started inside our namespaces) would keep the
        # namespaces alive after `ip netns delete`; they are ours to stop.
        for ns in self._created:
            try:
                leftover = netns.pids(ns)
            except RuntimeError:
                continue
            for pid in leftover:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
