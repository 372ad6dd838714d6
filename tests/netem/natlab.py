"""A small internet in network namespaces, for NAT traversal tests: a home network behind a NAT
(the edge), a cloud network behind another (the worker, its HTTP port forwarded like a load
balancer's), and a public TURN/STUN server (coturn), joined by a router.

    edge 10.10.0.2 -- home NAT 198.51.100.2 --+
                                              inet router -- turn 192.0.2.10 (coturn)
    worker 10.20.0.2 -- cloud NAT 203.0.113.2 +

The home NAT is nftables masquerade (Linux conntrack: it maps a flow to the port it had where
it can, and lets in only what answers a flow from inside). The cloud NAT is one-to-one, like a
cloud's public address for an instance: the worker's host address is private and unreachable,
its server-reflexive address (STUN) reaches it; ``cloud_napt`` makes it a second NAPT, which
STUN can't cross. ``block_udp`` rules make a side reachable only
through the relay (cloud: UDP only with the TURN server) or not by UDP at all (home: TURN over
TCP). Every address is a documentation range inside the lab's own namespaces:
nothing leaves the machine.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import mobieye.netem.netns as netns
from mobieye.runtime import die_with_parent

EDGE_IP = "10.10.0.2"
HOME_WAN = "198.51.100.2"
WORKER_IP = "10.20.0.2"
CLOUD_WAN = "203.0.113.2"
TURN_IP = "192.0.2.10"
TURN_PORT = 3478
WORKER_PORT = 8000
# The cloud NAT is one-to-one (a cloud's public address for one instance): everything sent to
# its public address goes to the worker, and the worker's own traffic leaves from it.
DNAT = f"dnat to {WORKER_IP}"
RELAY_PORTS = (49152, 49400)


def can_build() -> str | None:
    """Why the lab can't be built here (None: it can)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("nft", "turnserver"):
        if shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/usr/bin") is None:
            return f"needs {tool} (apt-get install nftables coturn)"
    if netns.ip_binary() is None:
        return "needs iproute2"
    return None


def _nft(ns: str, rules: str) -> None:
    done = subprocess.run(netns.exec_argv(ns, ["nft", "-f", "-"]), input=rules, text=True,
                          capture_output=True, check=False)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"nft in {ns} failed: {done.stderr.strip()}\n{rules}")


@dataclass
class NatLab:
    turn_secret: str
    prefix: str = field(default_factory=lambda: f"mobieye-nat{os.getpid()}-")
    _created: list[str] = field(default_factory=list)
    _procs: list[subprocess.Popen[Any]] = field(default_factory=list)

    def ns(self, host: str) -> str:
        return self.prefix + host

    # -- building ------------------------------------------------------------------------------
    def open(self) -> NatLab:
        try:
            for host in ("inet", "home", "edge", "cloud", "worker", "turn"):
                netns.add(self.ns(host))
                self._created.append(self.ns(host))
                self._sysctl(host, "net.ipv6.conf.all.disable_ipv6", "1")
                netns.run_ip("link", "set", "lo", "up", namespace=self.ns(host))
            # inet router, and the three networks on it
            self._link("inet", "tohome", "198.51.100.1/24", "home", "wan", f"{HOME_WAN}/24")
            self._link("inet", "tocloud", "203.0.113.1/24", "cloud", "wan", f"{CLOUD_WAN}/24")
            self._link("inet", "toturn", "192.0.2.1/24", "turn", "eth0", f"{TURN_IP}/24")
            self._link("home", "lan", "10.10.0.1/24", "edge", "eth0", f"{EDGE_IP}/24")
            self._link("cloud", "lan", "10.20.0.1/24", "worker", "eth0", f"{WORKER_IP}/24")
            for host, gw in (("home", "198.51.100.1"), ("cloud", "203.0.113.1"),
                             ("turn", "192.0.2.1"), ("edge", "10.10.0.1"),
                             ("worker", "10.20.0.1")):  # fmt: skip
                netns.run_ip("route", "add", "default", "via", gw, namespace=self.ns(host))
            for router in ("inet", "home", "cloud"):
                self._sysctl(router, "net.ipv4.ip_forward", "1")
            _nft(self.ns("home"), _nat_rules(forward=""))
            _nft(self.ns("cloud"), _nat_rules(forward="", dnat=DNAT))
            self._start_turn()
        except BaseException:
            self.close()
            raise
        return self

    def _sysctl(self, host: str, key: str, value: str) -> None:
        netns.sysctl(self.ns(host), key, value)

    def _link(self, a: str, a_if: str, a_ip: str, b: str, b_if: str, b_ip: str) -> None:
        tmp_a, tmp_b = f"v{os.getpid() % 10000}{a_if[:3]}a", f"v{os.getpid() % 10000}{b_if[:3]}b"
        netns.run_ip("link", "add", tmp_a, "netns", self.ns(a), "type", "veth", "peer", "name",
                     tmp_b, "netns", self.ns(b))  # fmt: skip
        for ns, tmp, name, ip in ((a, tmp_a, a_if, a_ip), (b, tmp_b, b_if, b_ip)):
            netns.run_ip("link", "set", tmp, "name", name, namespace=self.ns(ns))
            netns.run_ip("addr", "add", ip, "dev", name, namespace=self.ns(ns))
            netns.run_ip("link", "set", name, "up", namespace=self.ns(ns))

    def _start_turn(self) -> None:
        argv = [
            "turnserver", "-n", "--no-cli", "--no-tls", "--no-dtls", "--fingerprint",
            f"--listening-ip={TURN_IP}", f"--relay-ip={TURN_IP}", f"--listening-port={TURN_PORT}",
            "--use-auth-secret", f"--static-auth-secret={self.turn_secret}", "--realm=mobieye",
            f"--min-port={RELAY_PORTS[0]}", f"--max-port={RELAY_PORTS[1]}",
            "--no-multicast-peers", "--log-file=stdout", "--simple-log", "--pidfile=",
            # The lab's peers live in private and documentation ranges.
            "--allowed-peer-ip=10.0.0.0-10.255.255.255",
        ]  # fmt: skip
        self.turn = self.popen("turn", argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ss = netns.exec_argv(self.ns("turn"), ["ss", "-lnu"])
            listening = subprocess.run(ss, capture_output=True, text=True, check=False).stdout
            if f"{TURN_IP}:{TURN_PORT}" in listening:
                return
            if self.turn.poll() is not None:
                raise RuntimeError(
                    f"turnserver exited: {self.turn.stdout.read() if self.turn.stdout else ''}"
                )
            time.sleep(0.1)
        raise RuntimeError("turnserver did not start listening within 10 s")

    # -- scenarios -----------------------------------------------------------------------------
    def block_udp(self, router: str) -> None:
        """The network behind ``router`` (home or cloud) passes no UDP but to/from the TURN
        server's listening port (cloud: its media can only go through the relay) or none at all
        (home: only TCP, so TURN over TCP)."""
        allow = (
            ""
            if router == "home"
            else f"ip daddr {TURN_IP} udp dport {TURN_PORT} accept\n"
            f"    ip saddr {TURN_IP} udp sport {TURN_PORT} accept\n"
        )
        forward = f"{allow}    meta l4proto udp drop"
        dnat = DNAT if router == "cloud" else ""
        _nft(self.ns(router), "flush ruleset\n" + _nat_rules(forward=forward, dnat=dnat))

    def cloud_napt(self) -> None:
        """The cloud NAT as a second home-style NAPT: only the workers' HTTP ports forwarded,
        UDP let in only as answers. Two such NATs defeat STUN (each one's mapping for the peer
        differs from the one STUN saw): only the relay gets through."""
        dnat = f"tcp dport {{ 8000, 8001 }} dnat to {WORKER_IP}"
        _nft(self.ns("cloud"), "flush ruleset\n" + _nat_rules(forward="", dnat=dnat))

    def unblock(self, router: str) -> None:
        dnat = DNAT if router == "cloud" else ""
        _nft(self.ns(router), "flush ruleset\n" + _nat_rules(forward="", dnat=dnat))

    # -- processes -----------------------------------------------------------------------------
    def popen(self, host: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        kwargs.setdefault("preexec_fn", die_with_parent)
        proc: subprocess.Popen[Any] = subprocess.Popen(netns.exec_argv(self.ns(host), argv),
                                                       **kwargs)  # fmt: skip
        self._procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self._procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()
        for ns in reversed(self._created):
            with contextlib.suppress(RuntimeError):
                netns.delete(ns)
        self._created.clear()


def _nat_rules(forward: str, dnat: str = "") -> str:
    """Masquerade out of ``wan``; ``forward``: rules for what crosses the router."""
    return f"""
table ip nat {{
  chain prerouting {{
    type nat hook prerouting priority dstnat;
    iifname "wan" {dnat}
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat;
    oifname "wan" masquerade
  }}
}}
table ip filter {{
  chain forward {{
    type filter hook forward priority filter; policy accept;
    {forward}
  }}
}}
"""


@contextlib.contextmanager
def nat_lab(turn_secret: str) -> Iterator[NatLab]:
    lab = NatLab(turn_secret).open()
    try:
        yield lab
    finally:
        lab.close()
