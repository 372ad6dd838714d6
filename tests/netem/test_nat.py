"""NAT traversal for real: an edge behind a home NAT streams to a worker behind a cloud NAT, with
a real coturn between them (tests/netem/natlab.py), a real model on a real clip.

- STUN alone where it suffices (both NATs map endpoint-independently): server-reflexive pairs.
- TURN over UDP where it doesn't (the cloud network passes no UDP but to the TURN server: the
  worker is reachable only through the relay), with the first TURN server unreachable.
- TURN over TCP where the home network passes no UDP at all; the edge has no secret and gets
  time-limited credentials from the worker.
- Wrong credentials on the edge: said, naming the server and the failing step, and the stream
  still crosses through the worker's own relay.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.netem.natlab import CLOUD_WAN, TURN_IP, TURN_PORT, WORKER_PORT, NatLab, can_build

pytestmark = [pytest.mark.slow]

SECRET = "nat-lab-shared-secret-0123456789"
TOKEN = "nat-lab-worker-token-0123456789"
STUN = json.dumps([{"urls": [f"stun:{TURN_IP}:{TURN_PORT}"]}])
TURN_UDP = f"turn:{TURN_IP}:{TURN_PORT}?transport=udp"
TURN_TCP = f"turn:{TURN_IP}:{TURN_PORT}?transport=tcp"
UNREACHABLE = f"turn:{TURN_IP}:3999?transport=udp"
MIN_COVERAGE = 0.95
RUN_S = 20
STUN_WORKER_PORT = 8001


@pytest.fixture(scope="module")
def lab(model_path: Path) -> Iterator[NatLab]:
    """The lab with two workers behind the cloud NAT: on 8000 with STUN and a TURN relay (its
    secret), on 8001 with STUN alone."""
    problem = can_build()
    if problem:
        pytest.skip(f"NAT lab: {problem}")
    lab = NatLab(SECRET).open()
    try:
        turn = {"MOBIEYE_WEBRTC__TURN__URLS": json.dumps([TURN_UDP]),
                "MOBIEYE_WEBRTC__TURN__SECRET": SECRET}  # fmt: skip
        lab.workers = [start_worker(lab, WORKER_PORT, model_path, turn),
                       start_worker(lab, STUN_WORKER_PORT, model_path, {})]  # fmt: skip
        for port, (proc, log) in zip((WORKER_PORT, STUN_WORKER_PORT), lab.workers, strict=True):
            wait_healthy(lab, port, proc, log)
        yield lab
    finally:
        lab.close()


def start_worker(
    lab: NatLab, port: int, model: Path, env: dict[str, str]
) -> tuple[subprocess.Popen[Any], Path]:
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"{lab.prefix}worker-{port}.log"
    with open(log, "wb") as out:
        proc = lab.popen(
            "worker",
            [sys.executable, "-m", "cloud_worker", "--host", "0.0.0.0", "--port", str(port),
             "--model", str(model), "--imgsz", "320"],
            env={**os.environ, "MOBIEYE_WEBRTC__LOOPBACK_ONLY": "false",
                 "MOBIEYE_WORKER_TOKEN": TOKEN, "MOBIEYE_WEBRTC__ICE_SERVERS": STUN,
                 "MOBIEYE_LOG_LEVEL": "INFO", **env},
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return proc, log


def wait_healthy(lab: NatLab, port: int, proc: subprocess.Popen[Any], log: Path) -> None:
    """The worker's /healthz, asked from inside the edge's network (through both NATs)."""
    probe = ("import httpx,sys; sys.exit(0 if httpx.get(sys.argv[1], timeout=1, "
             "trust_env=False).status_code == 200 else 1)")  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        done = subprocess.run(
            ["ip", "netns", "exec", lab.ns("edge"), sys.executable, "-c", probe,
             f"http://{CLOUD_WAN}:{port}/healthz"], capture_output=True, check=False,
        )  # fmt: skip
        if done.returncode == 0:
            return
        time.sleep(0.5)
    raise AssertionError(f"the worker on {port} never became healthy through the NATs")


def stream(
    lab: NatLab, clip: Path, tmp_path: Path, port: int = WORKER_PORT, **env: str
) -> dict[str, Any]:
    """Run an edge in the home network for RUN_S seconds against the worker on ``port``; its
    report."""
    report = tmp_path / "edge.json"
    edge = lab.popen(
        "edge",
        [sys.executable, "-m", "edge_agent", "--worker", f"http://{CLOUD_WAN}:{port}",
         "--source", str(clip), "--loop", "--duration", str(RUN_S), "--report", str(report),
         "--log-level", "INFO"],
        env={**os.environ, "MOBIEYE_WEBRTC__LOOPBACK_ONLY": "false",
             "MOBIEYE_WORKER_TOKEN": TOKEN, **env},
    )  # fmt: skip
    assert edge.wait(timeout=RUN_S + 90) == 0
    r: dict[str, Any] = json.loads(report.read_text())
    coverage = r["frames_with_result"] / max(1, r["frames_captured"])
    assert coverage >= MIN_COVERAGE, (coverage, r["errors"], r["ice_pair"])
    assert r["classes_seen"].get("person", 0) > 0
    return r


def test_stun_alone_crosses_two_nats(lab: NatLab, pedestrian_clip: Path, tmp_path: Path) -> None:
    r = stream(lab, pedestrian_clip, tmp_path, STUN_WORKER_PORT, MOBIEYE_WEBRTC__ICE_SERVERS=STUN)
    pair = r["ice_pair"]
    # Neither side's host address is reachable from the other: the path is the NATs' mappings.
    assert pair["local"] == "host" and pair["remote"] in ("srflx", "prflx"), pair
    assert pair["remote_address"].startswith(CLOUD_WAN), pair


def test_worker_only_through_the_relay_over_udp_skipping_a_dead_turn_server(
    lab: NatLab, pedestrian_clip: Path, tmp_path: Path
) -> None:
    lab.block_udp("cloud")
    try:
        r = stream(
            lab, pedestrian_clip, tmp_path, MOBIEYE_WEBRTC__ICE_SERVERS=STUN,
            MOBIEYE_WEBRTC__TURN__URLS=json.dumps([UNREACHABLE, TURN_UDP]),
            MOBIEYE_WEBRTC__TURN__SECRET=SECRET,
        )  # fmt: skip
    finally:
        lab.unblock("cloud")
    pair = r["ice_pair"]
    assert "relay" in (pair["local"], pair["remote"]), pair
    assert any(f"{TURN_IP}:3999 over udp: unreachable" in p for p in r["ice_problems"])


def test_two_napts_need_the_relay(lab: NatLab, pedestrian_clip: Path, tmp_path: Path) -> None:
    """Both sides behind port-translating NATs (no firewall rule at all): hole punching fails
    (found while building this lab), the relay carries the stream."""
    lab.cloud_napt()
    try:
        r = stream(lab, pedestrian_clip, tmp_path, MOBIEYE_WEBRTC__ICE_SERVERS=STUN,
                   MOBIEYE_WEBRTC__TURN__URLS=json.dumps([TURN_UDP]),
                   MOBIEYE_WEBRTC__TURN__SECRET=SECRET)  # fmt: skip
    finally:
        lab.unblock("cloud")
    assert "relay" in (r["ice_pair"]["local"], r["ice_pair"]["remote"]), r["ice_pair"]
    assert r["ice_problems"] == []


def test_edge_without_udp_relays_over_tcp_with_credentials_from_the_worker(
    lab: NatLab, pedestrian_clip: Path, tmp_path: Path
) -> None:
    lab.block_udp("home")
    try:
        # No secret on the edge: GET /ice-servers on the worker mints its credentials.
        r = stream(lab, pedestrian_clip, tmp_path, MOBIEYE_WEBRTC__ICE_SERVERS="[]",
                   MOBIEYE_WEBRTC__TURN__URLS=json.dumps([TURN_TCP]))  # fmt: skip
    finally:
        lab.unblock("home")
    assert r["ice_pair"]["local"] == "relay", r["ice_pair"]
    # The worker's UDP URL, tried after the edge's own, is named as unreachable from here.
    assert all("over udp: unreachable" in p for p in r["ice_problems"]), r["ice_problems"]


def test_wrong_turn_credentials_are_named_and_the_workers_relay_still_carries(
    lab: NatLab, pedestrian_clip: Path, tmp_path: Path
) -> None:
    lab.block_udp("cloud")
    try:
        r = stream(lab, pedestrian_clip, tmp_path, MOBIEYE_WEBRTC__ICE_SERVERS=STUN,
                   MOBIEYE_WEBRTC__TURN__URLS=json.dumps([TURN_UDP]),
                   MOBIEYE_WEBRTC__TURN__SECRET="not-the-servers-secret")  # fmt: skip
    finally:
        lab.unblock("cloud")
    assert any(
        f"TURN server {TURN_IP}:{TURN_PORT} over udp: allocation refused: 401" in p
        for p in r["ice_problems"]
    ), r["ice_problems"]
    assert r["ice_pair"]["remote"] == "relay", r["ice_pair"]  # the worker's own relay


def test_ice_servers_route_wants_the_token_and_mints_expiring_credentials(lab: NatLab) -> None:
    probe = (
        "import httpx,sys,json; r = httpx.get(sys.argv[1], headers=json.loads(sys.argv[2]), "
        "timeout=3, trust_env=False); print(r.status_code); print(r.text)"
    )
    url = f"http://{CLOUD_WAN}:{WORKER_PORT}/ice-servers"

    def get(headers: dict[str, str]) -> tuple[int, str]:
        done = subprocess.run(
            ["ip", "netns", "exec", lab.ns("edge"), sys.executable, "-c", probe, url,
             json.dumps(headers)], capture_output=True, text=True, check=True,
        )  # fmt: skip
        code, body = done.stdout.split("\n", 1)
        return int(code), body

    assert get({})[0] == 401
    code, body = get({"Authorization": f"Bearer {TOKEN}"})
    assert code == 200
    servers = json.loads(body)["ice_servers"]
    turn = [s for s in servers if s["urls"] == [TURN_UDP]]
    assert turn and turn[0]["username"].split(":")[1] == "mobieye"
    expires = int(turn[0]["username"].split(":")[0])
    assert time.time() + 3000 < expires <= time.time() + 3601  # webrtc.turn.ttl_s, 1 h
    assert SECRET not in body
