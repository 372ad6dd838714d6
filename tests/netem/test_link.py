"""EmulatedLink end to end: real namespaces, TAPs and the relay (root only).

Probes run as small Python programs inside the namespaces, started with ``link.popen``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import pytest

from mobieye.netem import (
    EDGE_IP,
    WORKER_IP,
    EmulatedLink,
    LinkProfile,
    check_can_emulate,
    cleanup_stale_namespaces,
    netns,
)
from tests.realparts import reason


def _unavailable() -> str | None:
    try:
        check_can_emulate()
    except (PermissionError, RuntimeError) as exc:
        return str(exc)
    return None


_REASON = _unavailable()
pytestmark = pytest.mark.skipif(
    _REASON is not None, reason=f"{reason('root')} (cannot emulate links: {_REASON})"
)

PORT = 9999

# UDP echo server: prints "ready" once bound so the client never races it.
ECHO_SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    data, addr = s.recvfrom(65536)
    s.sendto(data, addr)
"""

# Ping-like client: COUNT probes every INTERVAL s, then waits LINGER s for late replies.
# Prints the RTT of each answered probe and the order replies arrived in.
ECHO_CLIENT = """
import json, select, socket, struct, sys, time
host, port, count, interval, linger = (
    sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((host, port))
s.setblocking(False)
pad = bytes(100)
deadline = time.monotonic() + 10.0
while time.monotonic() < deadline:  # warm-up: the path works end to end
    s.send(struct.pack("!i", -1) + pad)
    if select.select([s], [], [], 0.3)[0]:
        break
time.sleep(0.3)
while True:  # drain warm-up replies
    try:
        s.recv(2048)
    except BlockingIOError:
        break
sent, rtts, order = {}, {}, []
start = time.monotonic()
i, stop = 0, None
while True:
    now = time.monotonic()
    if i < count and now >= start + i * interval:
        sent[i] = now
        s.send(struct.pack("!i", i) + pad)
        i += 1
        continue
    if i >= count and stop is None:
        stop = now + linger
    if stop is not None and now >= stop:
        break
    wake = start + i * interval if i < count else stop
    if select.select([s], [], [], max(0.0, wake - now))[0]:
        while True:
            try:
                data = s.recv(2048)
            except BlockingIOError:
                break
            seq = struct.unpack("!i", data[:4])[0]
            if seq >= 0 and seq not in rtts:
                rtts[seq] = (time.monotonic() - sent[seq]) * 1000.0
                order.append(seq)
print(json.dumps({"sent": count, "rtts_ms": list(rtts.values()), "order": order}))
"""

# UDP sink: records each datagram's arrival; stops IDLE s after the last one.
SINK = """
import json, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
s.settimeout(15.0)
arrivals = []
while True:
    try:
        data = s.recv(65536)
    except socket.timeout:
        break
    arrivals.append((time.monotonic(), len(data)))
    s.settimeout(float(sys.argv[3]))
print(json.dumps(arrivals))
"""

# Paced UDP sender: SIZE-byte datagrams at KBPS (payload bits) for SECONDS.
SENDER = """
import socket, sys, time
host, port, size, kbps, seconds = (
    sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
gap = size * 8 / (kbps * 1000)
start = time.monotonic()
n = 0
while n * gap < seconds:
    delay = start + n * gap - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    s.sendto(bytes(size), (host, port))
    n += 1
print(n)
"""


def _python(link: EmulatedLink, ns: str, script: str, *args: object) -> subprocess.Popen[str]:
    argv: Sequence[str] = [sys.executable, "-c", script, *map(str, args)]
    return link.popen(ns, argv, stdout=subprocess.PIPE, text=True)


def _start_server(link: EmulatedLink, script: str, *args: object) -> subprocess.Popen[str]:
    server = _python(link, link.worker_ns, script, WORKER_IP, PORT, *args)
    assert server.stdout is not None
    assert server.stdout.readline().strip() == "ready"
    return server


def _ping(link: EmulatedLink, count: int, interval_s: float, linger_s: float) -> dict[str, Any]:
    _start_server(link, ECHO_SERVER)
    client = _python(link, link.edge_ns, ECHO_CLIENT, WORKER_IP, PORT, count, interval_s, linger_s)
    out, _ = client.communicate(timeout=30)
    assert client.returncode == 0
    result: dict[str, Any] = json.loads(out)
    return result


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _median(values: Sequence[float]) -> float:
    return _quantile(values, 0.5)


def test_fixed_delay_rtt_is_twice_the_delay() -> None:
    profile = LinkProfile(name="delay20", delay_ms=20.0)
    with EmulatedLink(profile) as link:
        result = _ping(link, count=100, interval_s=0.005, linger_s=0.3)
        stats = link.stats()
    rtts = result["rtts_ms"]
    assert len(rtts) == 100
    # 40 ms of emulated delay plus the relay's and the echo's own sub-millisecond latency.
    assert min(rtts) >= 40.0
    # Medians and means, not maxima: a busy machine delays the probe programs themselves.
    assert _median(rtts) < 42.5, sorted(rtts)
    for direction in (stats.edge_to_worker, stats.worker_to_edge):
        assert direction.forwarded >= 100
        assert direction.dropped == 0
        assert direction.mean_delay_ms == pytest.approx(20.0)
        assert direction.mean_late_us < 1000


def test_lte_profile_rtt_jitter_order_and_ice_addresses() -> None:
    with EmulatedLink("lte", seed=0) as link:
        result = _ping(link, count=200, interval_s=0.01, linger_s=0.5)
        # aioice's own host-candidate discovery sees only the wire inside the edge host.
        probe = link.popen(
            link.edge_ns,
            [
                sys.executable,
                "-c",
                "import aioice.ice as i; print(i.get_host_addresses(True, True))",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        out, _ = probe.communicate(timeout=30)
    assert probe.returncode == 0
    assert out.strip() == repr([EDGE_IP])
    rtts = result["rtts_ms"]
    # 1% loss each way: 200 probes lose ~4; far fewer replies would mean extra loss.
    assert len(rtts) >= 180
    assert min(rtts) > 40.0  # 2 x (35 - 15)
    assert 60.0 < _median(rtts) < 100.0  # 70 nominal; in-order release biases it upward
    assert _quantile(rtts, 0.9) < 2 * (35 + 15) + 10
    assert _quantile(rtts, 0.9) - _quantile(rtts, 0.1) > 10.0  # jitter is applied
    assert result["order"] == sorted(result["order"])  # and never reorders


def test_loss_rate_matches_profile() -> None:
    profile = LinkProfile(name="lossy", delay_ms=1.0, loss=0.1)
    with EmulatedLink(profile, seed=7) as link:
        result = _ping(link, count=400, interval_s=0.004, linger_s=0.3)
        stats = link.stats()
    # A round trip survives both directions: expected loss 1 - 0.9**2 = 0.19.
    lost = 1.0 - len(result["rtts_ms"]) / result["sent"]
    assert 0.05 < lost < 0.3, lost
    for direction in (stats.edge_to_worker, stats.worker_to_edge):
        assert 0.05 < direction.dropped_loss / direction.received < 0.17


def test_rate_limit_delivers_about_the_rate() -> None:
    rate_kbps = 2000.0
    profile = LinkProfile(name="slow", delay_ms=5.0, rate_kbps=rate_kbps, queue_ms=100.0)
    size = 1000
    with EmulatedLink(profile) as link:
        sink = _start_server(link, SINK, 0.5)
        sender = _python(link, link.edge_ns, SENDER, WORKER_IP, PORT, size, 2 * rate_kbps, 1.0)
        sent_out, _ = sender.communicate(timeout=30)
        sink_out, _ = sink.communicate(timeout=30)
        stats = link.stats()
    sent = int(sent_out)
    arrivals = json.loads(sink_out)
    assert sent >= 480  # the sender really offered ~2x the rate
    # Steady-state goodput; the link counts Ethernet frames (payload + 42 bytes of headers).
    duration = arrivals[-1][0] - arrivals[0][0]
    kbps = sum(n for _, n in arrivals[1:]) * 8 / duration / 1000
    expected = rate_kbps * size / (size + 42)
    assert 0.9 * expected < kbps < 1.05 * expected, kbps
    # ~1 s at the rate plus the 100 ms queue drained afterwards: about half of what was sent.
    assert len(arrivals) < 0.65 * sent
    assert stats.edge_to_worker.dropped_queue > 0.3 * sent


def _leftovers(link: EmulatedLink) -> list[str]:
    names = [ns for ns in (link.edge_ns, link.worker_ns) if netns.exists(ns)]
    taps = [t for t in link._taps.values() if os.path.exists(f"/sys/class/net/{t}")]
    return names + taps


def test_cleanup_after_normal_exit() -> None:
    with EmulatedLink(LinkProfile(name="plain")) as link:
        assert netns.exists(link.edge_ns) and netns.exists(link.worker_ns)
        assert link._wire is not None
        relay_pid = link._wire.pid
        sleeper = link.popen(link.worker_ns, ["sleep", "60"])
    assert _leftovers(link) == []
    assert sleeper.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.kill(relay_pid, 0)
    assert link.stats().edge_to_worker.dropped == 0  # final counters stay readable


def test_cleanup_when_the_body_raises() -> None:
    with pytest.raises(ZeroDivisionError), EmulatedLink(LinkProfile(name="plain")) as link:
        assert netns.exists(link.edge_ns)
        _ = 1 / 0
    assert _leftovers(link) == []


def test_cleanup_when_setup_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(fd_a: int, fd_b: int, *args: object) -> None:
        os.close(fd_a)  # as the real WireProcess does: it owns the fds once called
        os.close(fd_b)
        raise RuntimeError("relay failed to start")

    monkeypatch.setattr("mobieye.netem.hosts.WireProcess", broken)
    link = EmulatedLink(LinkProfile(name="plain"))
    with pytest.raises(RuntimeError, match="relay failed"), link:
        pass
    assert _leftovers(link) == []


def test_loopback_profile_is_not_emulated() -> None:
    with pytest.raises(ValueError, match=r"127\.0\.0\.1"):
        EmulatedLink("loopback")


def test_two_links_at_once_are_isolated() -> None:
    plain = LinkProfile(name="plain")
    with EmulatedLink(plain) as first, EmulatedLink(LinkProfile(name="d5", delay_ms=5.0)) as second:
        assert {first.edge_ns, first.worker_ns}.isdisjoint({second.edge_ns, second.worker_ns})
        fast = _ping(first, count=20, interval_s=0.005, linger_s=0.2)["rtts_ms"]
        slow = _ping(second, count=20, interval_s=0.005, linger_s=0.2)["rtts_ms"]
    assert len(fast) == len(slow) == 20
    assert _median(fast) < 5.0
    assert min(slow) >= 10.0


# Opens a link, reports its namespaces and relay pid, then waits to be killed.
HOLDER = """
import json, sys, time
from mobieye.netem import EmulatedLink, LinkProfile
from tests.realparts import reason
with EmulatedLink(LinkProfile(name="plain")) as link:
    print(json.dumps([link.edge_ns, link.worker_ns, link._wire.pid]), flush=True)
    time.sleep(60)
"""


def test_killed_owner_stops_the_relay_and_leaves_cleanable_namespaces() -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    edge_ns, worker_ns, relay_pid = json.loads(holder.stdout.readline())
    holder.kill()  # no chance to clean up
    holder.wait()
    holder.stdout.close()
    try:
        deadline = time.monotonic() + 5.0
        while _pid_alive(relay_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _pid_alive(relay_pid)  # the relay saw EOF on its control pipe
        assert netns.exists(edge_ns) and netns.exists(worker_ns)
        removed = cleanup_stale_namespaces()
        assert {edge_ns, worker_ns} <= set(removed)
    finally:
        for ns in (edge_ns, worker_ns):
            if netns.exists(ns):
                netns.delete(ns)
    assert not netns.exists(edge_ns) and not netns.exists(worker_ns)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0) until reaped by init; count it as gone.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ", 1)[1][0] != "Z"


def test_a_cut_wire_loses_everything_until_it_is_restored() -> None:
    """The bench's --outage over a link: nothing crosses while cut, all again after."""

    def probe(link: EmulatedLink) -> int:
        client = _python(link, link.edge_ns, ECHO_CLIENT, WORKER_IP, PORT, 20, 0.01, 0.2)
        out, _ = client.communicate(timeout=30)
        assert client.returncode == 0
        return len(json.loads(out)["rtts_ms"])

    with EmulatedLink(LinkProfile(name="plain", delay_ms=1.0)) as link:
        _start_server(link, ECHO_SERVER)
        assert probe(link) == 20
        link.cut(True)
        assert probe(link) == 0
        assert link.stats().edge_to_worker.dropped_cut >= 20
        link.cut(False)
        assert probe(link) == 20
