"""A worker safe to expose: while a real edge streams to a real worker process, hostile clients
try everything a network peer can (no or a wrong token, wrong media types, huge bodies, offers
that never connect, peers that never send a frame, flood their data channel, advertise a tiny
max-message-size, stop reading, send 1440p frames). Every attack gets its refusal, each slot
comes back within its timeout, and the legitimate stream keeps its results."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mobieye.runtime import free_port
from mobieye.webrtc import confine_to_loopback
from tests.e2e.hostile import (
    SyntheticTrack,
    closed_reason,
    endless_chunked_post,
    metric,
    offer,
    raw_request,
    stop_reading,
)

pytestmark = pytest.mark.slow

TOKEN = "hostile-test-token-0123456789"
TIMEOUT_S = 3.0  # connect, first-frame and idle timeouts of the worker under attack
EDGE_S = 75.0


@pytest.fixture(scope="module")
def guarded_worker(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = (tmp_path_factory.mktemp("hostile") / "worker.log").open("wb")
    env = {
        **os.environ,
        "MOBIEYE_WORKER_TOKEN": TOKEN,
        "MOBIEYE_WORKER__MAX_STREAMS": "4",
        "MOBIEYE_WORKER__CONNECT_TIMEOUT_S": str(TIMEOUT_S),
        "MOBIEYE_WORKER__FIRST_FRAME_TIMEOUT_S": str(TIMEOUT_S),
        "MOBIEYE_WORKER__IDLE_TIMEOUT_S": str(TIMEOUT_S),
        "MOBIEYE_WORKER__MAX_BUFFERED_BYTES": str(16 * 1024),
        "MOBIEYE_WORKER__MAX_MESSAGES_PER_S": "50",
    }
    argv = [sys.executable, "-m", "cloud_worker", "--port", str(port), "--model", str(model_path)]
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the worker exited"
        try:
            if httpx.get(url + "/healthz", timeout=1, trust_env=False).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(15)


def start_edge(url: str, clip: Path, report: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "mobieye.cli", "edge", "--source", str(clip), "--loop",
            "--worker", url, "--duration", str(EDGE_S), "--report", str(report),
            "--stream-id", "legit"]  # fmt: skip
    return subprocess.Popen(argv, env={**os.environ, "MOBIEYE_WORKER_TOKEN": TOKEN})


async def refusals_before_any_route(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=10) as anon:
        assert (await anon.get("/healthz")).status_code == 200  # health stays open
        for path in ("/streams", "/viewers", "/streams/legit/mjpeg"):
            r = await anon.get(path)
            assert r.status_code == 401, (path, r.text)
            assert "Bearer" in r.json()["error"]
        r = await anon.get("/streams", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
        r = await anon.post("/offer", json={"sdp": "v=0", "type": "offer"})
        assert r.status_code == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=10, headers=auth) as c:
        r = await c.post("/offer", content=b"v=0", headers={"content-type": "text/plain"})
        assert r.status_code == 415 and "application/json" in r.json()["error"]
        status, body = await raw_request(url, (
            f"POST /offer HTTP/1.1\nHost: x\nAuthorization: Bearer {TOKEN}\n"
            f"Content-Type: application/json\nContent-Length: {5 * 2**30}\n"
        ), b"{")  # fmt: skip
        assert status == 413 and "limit" in body, body
        # No Content-Length (chunked): refused as the bytes pass the cap, not after 1 GB.
        status, written = await endless_chunked_post(url, TOKEN, 2**30)
        assert status == 413
        # What the client got written is what the worker read plus what the kernels buffered
        # (loopback's receive buffer autotunes up to tcp_rmem's max, 32 MB here): a fixed
        # 16 MB bound failed under load at 16.25 MB. Past both buffers, the worker read it.
        assert written < kernel_buffers() + 4 * 2**20, (
            f"the worker took {written} bytes before refusing"
        )
        r = await c.post("/offer", json={"sdp": _with_audio(), "type": "offer"})
        assert r.status_code == 400 and "audio" in r.json()["error"], r.text


def kernel_buffers() -> int:
    """The most a TCP connection can hold in flight here: the sender's and the receiver's
    largest socket buffers (Linux's tcp_wmem and tcp_rmem maxima)."""
    total = 0
    for name in ("tcp_wmem", "tcp_rmem"):
        try:
            total += int(Path(f"/proc/sys/net/ipv4/{name}").read_text().split()[2])
        except (OSError, ValueError, IndexError):
            total += 8 * 2**20
    return total


def _with_audio() -> str:
    return (
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
        "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\n"
    )


async def hostile_peers(url: str) -> dict[str, tuple[str | None, float]]:
    """Each kind of hostile peer, a few at a time; returns stream -> (close reason, wait)."""
    confine_to_loopback()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    outcome: dict[str, tuple[str | None, float]] = {}
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=20, headers=auth) as c:
        # Three peers that vanish after the answer fill three of four slots: the fourth is
        # the legitimate stream's, so a fifth is refused until their connect timeout.
        ghosts = [await offer(c, SyntheticTrack(), f"ghost-{i}", connect=False) for i in range(3)]
        assert all(r.status_code == 200 for _, _, r in ghosts), [r.text for *_, r in ghosts]
        _, _, full = await offer(c, SyntheticTrack(), "one-too-many", connect=False)
        assert full.status_code == 503 and "capacity" in full.json()["error"]
        for i in range(3):
            outcome[f"ghost-{i}"] = await closed_reason(c, f"ghost-{i}", TIMEOUT_S + 5)

        silent_pc, _, r = await offer(c, SyntheticTrack(silent=True), "silent")
        assert r.status_code == 200, r.text
        tiny_pc, _, r = await offer(
            c, SyntheticTrack(), "tiny-messages",
            munge=lambda sdp: re.sub(r"a=max-message-size:\d+", "a=max-message-size:16", sdp),
        )  # fmt: skip
        assert r.status_code == 200, r.text
        outcome["silent"] = await closed_reason(c, "silent", 2 * TIMEOUT_S + 5)
        outcome["tiny-messages"] = await closed_reason(c, "tiny-messages", 10)
        for pc in (silent_pc, tiny_pc):
            await pc.close()

        flood_pc, channel, r = await offer(c, SyntheticTrack(), "flood")
        assert r.status_code == 200, r.text
        for _ in range(100):
            if channel.readyState == "open":
                break
            await asyncio.sleep(0.1)
        for _ in range(500):
            channel.send('{"type": "latency", "samples_ms": [1.0]}')
        outcome["flood"] = await closed_reason(c, "flood", 10)
        await flood_pc.close()

        deaf_pc, _, r = await offer(c, SyntheticTrack(), "deaf")
        assert r.status_code == 200, r.text
        for _ in range(100):
            if deaf_pc.sctp is not None and deaf_pc.sctp.state == "connected":
                break
            await asyncio.sleep(0.1)
        stop_reading(deaf_pc)
        outcome["deaf"] = await closed_reason(c, "deaf", 30)
        await deaf_pc.close()

        big_pc, _, r = await offer(c, SyntheticTrack(2560, 1440), "too-large")
        assert r.status_code == 200, r.text
        outcome["too-large"] = await closed_reason(c, "too-large", 20)
        await big_pc.close()
    return outcome


def test_hostile_clients_hurt_only_themselves(
    guarded_worker: str, pedestrian_clip: Path, tmp_path: Path
) -> None:
    report = tmp_path / "legit.json"
    edge = start_edge(guarded_worker, pedestrian_clip, report)
    try:
        time.sleep(8)  # the legitimate stream is up before the attacks start
        asyncio.run(refusals_before_any_route(guarded_worker))
        outcome = asyncio.run(hostile_peers(guarded_worker))
        assert edge.wait(EDGE_S + 60) == 0
    finally:
        if edge.poll() is None:
            edge.kill()
    expected = {
        "ghost-0": "connect_timeout",
        "ghost-1": "connect_timeout",
        "ghost-2": "connect_timeout",
        "silent": "first_frame_timeout",
        "tiny-messages": "peer_small_messages",
        "flood": "flood",
        "deaf": "peer_slow",
        "too-large": "oversized_frames",
    }
    assert {k: v[0] for k, v in outcome.items()} == expected, outcome
    for name in ("ghost-0", "silent"):
        assert outcome[name][1] < 2 * TIMEOUT_S + 3, f"{name}'s slot took {outcome[name][1]} s"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    text = httpx.get(guarded_worker + "/metrics", trust_env=False).text
    assert metric(text, "mobieye_requests_refused_total", reason="unauthorized") >= 5
    assert metric(text, "mobieye_requests_refused_total", reason="media_type") >= 1
    assert metric(text, "mobieye_requests_refused_total", reason="too_large") >= 1
    assert metric(text, "mobieye_frames_rejected_total", reason="too_large") >= 1
    for reason in set(expected.values()):
        assert metric(text, "mobieye_sessions_closed_total", reason=reason) >= 1, reason
    summary = json.loads(report.read_text())
    assert summary["result_ratio"] >= 0.95, summary
    assert summary["failovers"] == 0, summary["errors"]
    # Every slot came back: nothing but (at most) the ended legitimate stream is left.
    active = httpx.get(guarded_worker + "/streams", headers=auth, trust_env=False).json()["active"]
    assert active == [], active
    assert httpx.get(guarded_worker + "/healthz", trust_env=False).json()["status"] == "ok"
