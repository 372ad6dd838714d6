"""The dashboard's API over HTTP, fed by a real Mosquitto: what workers publish shows up, commands
go out, and nothing but /healthz answers without the token."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from mobieye.config import IceServer, MqttConfig, TurnConfig, WebRTCConfig
from mobieye.dashboard.auth import COOKIE, TOKEN_ENV
from mobieye.fleet import topics
from mobieye.fleet.payloads import (
    Command,
    LatencyMs,
    ObjectEvent,
    StreamStats,
    WorkerState,
    parse_payload,
)
from mobieye.mqtt.broker import MosquittoProcess
from mobieye.mqtt.client import MqttLink

from .conftest import Dashboard, eventually

P = "mobieye"
STREAM_FIELDS = {"id", "worker", "fps", "latency_ms", "model", "keyframe_interval"}
STREAM_FIELDS |= {"detector_fraction", "stale"}


async def get_json(client: httpx.AsyncClient, path: str) -> Any:
    r = await client.get(path)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.asyncio
async def test_published_fleet_shows_up_in_the_api(
    dashboard: Dashboard, publisher: MqttLink
) -> None:
    state = WorkerState(id="w1", status="online", url="http://127.0.0.1:8000", capacity=4)
    publisher.publish(topics.worker_state(P, "w1"), state, retain=True)
    stats = StreamStats(
        stream="cam-1",
        worker="w1",
        fps=24.5,
        latency_ms=LatencyMs(p50=41, p95=87),
        model="yolox_nano@416",
        keyframe_interval=6,
        detector_fraction=0.17,
    )
    publisher.publish(topics.stream_stats(P, "cam-1"), stats)
    event = ObjectEvent(
        type="new", stream="cam-1", track_id=3, label="person", box=[0, 0, 0.5, 0.5], score=0.9,
        ts=1.0,
    )  # fmt: skip
    publisher.publish(topics.events(P), event)
    async with dashboard.client() as client:

        async def listed() -> list[dict[str, Any]]:
            return [s for s in await get_json(client, "/api/streams") if s["id"] == "cam-1"]

        (stream,) = await eventually(listed, what="the stream in /api/streams")
        assert stream.keys() >= STREAM_FIELDS
        assert stream["worker"] == "w1" and stream["fps"] == 24.5
        assert stream["latency_ms"] == {"p50": 41, "p95": 87}
        assert (stream["model"], stream["keyframe_interval"]) == ("yolox_nano@416", 6)
        assert stream["detector_fraction"] == 0.17 and stream["stale"] is False

        workers = await get_json(client, "/api/workers")
        assert [(w["id"], w["status"], w["url"]) for w in workers] == [
            ("w1", "online", "http://127.0.0.1:8000")
        ]
        assert (await get_json(client, "/api/streams/cam-1"))["worker_status"] == "online"
        series = await get_json(client, "/api/streams/cam-1/series")
        assert series["stream"] == "cam-1" and series["points"][-1]["p95_ms"] == 87
        events = await get_json(client, "/api/events?limit=5")
        assert [(e["stream"], e["track_id"], e["label"]) for e in events] == [
            ("cam-1", 3, "person")
        ]
        page = await client.get("/")
        assert page.status_code == 200 and "cam-1" in page.text and "w1" in page.text
        page = await client.get("/streams/cam-1")
        assert page.status_code == 200 and "yolox_nano@416" in page.text
        # The stream page loads its own module and nothing else: same-origin scripts only.
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "connect-src 'self'" in csp
        assert "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
        assert '<script type="module" src="/static/stream.js">' in page.text
        assert 'data-stream="cam-1"' in page.text
        for name in ("stream.js", "live.js", "chart.js"):
            js = await client.get(f"/static/{name}")
            assert js.status_code == 200 and "javascript" in js.headers["content-type"], name

        # The worker clears the retained state when the stream ends: it leaves the dashboard.
        publisher.publish(topics.stream_state(P, "cam-1"), b"", retain=True)

        async def gone() -> bool:
            return (await client.get("/api/streams/cam-1")).status_code == 404

        await eventually(gone, what="the ended stream to go")
        status = await get_json(client, "/api/status")
        assert status["mqtt"]["connected"] is True and status["malformed"] == 0


@pytest.mark.asyncio
async def test_unknown_stream_is_a_404_with_the_reason(dashboard: Dashboard) -> None:
    async with dashboard.client() as client:
        for path in ("/api/streams/nope", "/api/streams/nope/series"):
            r = await client.get(path)
            assert r.status_code == 404
            assert "unknown stream 'nope'" in r.json()["error"]
        r = await client.get("/streams/nope")
        assert r.status_code == 404 and "text/html" in r.headers["content-type"]
        assert "unknown stream" in r.text and "Traceback" not in r.text
        r = await client.get("/api/events?limit=0")
        assert r.status_code == 422 and "limit" in r.json()["error"]
        # The live-view proxies need a live worker for the stream, and a well-formed offer.
        r = await client.post("/api/streams/nope/view", json={"sdp": "v=0", "type": "offer"})
        assert r.status_code == 404 and "no live worker" in r.json()["error"]
        r = await client.post("/api/streams/nope/view", content=b"{not json")
        assert r.status_code == 422 and "sdp" in r.json()["error"]
        r = await client.get("/api/streams/nope/mjpeg")
        assert r.status_code == 404
        # A phone's camera goes to a live worker with room: none is known here.
        r = await client.post("/api/phone/offer", json={"sdp": "v=0", "type": "offer"})
        assert r.status_code == 503 and "no live worker with room" in r.json()["error"]
        r = await client.post("/api/phone/offer", json={"type": "offer"})
        assert r.status_code == 422
        page = await client.get("/phone")
        assert page.status_code == 200 and "/static/phone.js" in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]


@pytest.mark.asyncio
async def test_token_is_required_and_a_page_url_token_sets_a_session_cookie(
    dashboard: Dashboard,
) -> None:
    async with dashboard.client(auth=False) as client:
        assert (await client.get("/healthz")).status_code == 200
        for path in ("/api/streams", "/api/workers", "/", "/streams/x"):
            r = await client.get(path)
            assert r.status_code == 401, path
            assert "token" in r.json()["error"]
        r = await client.get("/api/streams", headers={"authorization": "Bearer wrong"})
        assert r.status_code == 401
        r = await client.get("/?token=wrong")
        assert r.status_code == 401 and COOKIE not in client.cookies
        # The API takes the token in a header only: URLs end up in logs.
        r = await client.get(f"/api/streams?token={dashboard.token}")
        assert r.status_code == 401

        r = await client.get(f"/?token={dashboard.token}")
        assert r.status_code == 200
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert dashboard.token not in cookie, "the cookie holds a session id, not the token"
        assert client.cookies[COOKIE]
        assert (await client.get("/api/streams")).status_code == 200
        assert (await client.get("/")).status_code == 200

    async with dashboard.client(auth=False) as forged:
        forged.cookies.set(COOKIE, "made-up-session")
        assert (await forged.get("/api/streams")).status_code == 401
    async with dashboard.client() as bearer:
        assert (await bearer.get("/api/workers")).status_code == 200


@pytest.mark.asyncio
async def test_set_publishes_a_validated_command(
    dashboard: Dashboard, broker: MosquittoProcess
) -> None:
    got: list[bytes] = []
    listener = MqttLink(MqttConfig(broker=broker.url), "test-listener")

    def keep(_topic: str, payload: bytes) -> None:
        got.append(payload)

    await listener.subscribe(topics.stream_set(P, "x"), keep)
    await listener.start()
    try:
        await asyncio.wait_for(listener.connected.wait(), 5)
        async with dashboard.client() as client:
            r = await client.post("/api/streams/x/set", json={"sla_ms": 150})
            assert r.status_code == 202, r.text
            assert r.json()["topic"] == "mobieye/streams/x/set" and r.json()["known"] is False

            async def received() -> bool:
                return bool(got)

            await eventually(received, what="the command on mobieye/streams/x/set")
            command = parse_payload(Command, got[0])
            assert command.sla_ms == 150 and command.model is None

            r = await client.post("/api/streams/x/set", json={"sla_ms": 5})
            assert r.status_code == 422
            assert "sla_ms" in r.json()["error"] and "greater than or equal to 10" in r.text
            r = await client.post("/api/streams/x/set", json={"sla": 150})
            assert r.status_code == 422 and "sla" in r.json()["problems"][0]
            r = await client.post("/api/streams/x/set", content=b"{not json")
            assert r.status_code == 422 and "Command" in r.json()["error"]
            r = await client.post("/api/streams/a%20b/set", json={"sla_ms": 150})
            assert r.status_code == 400 and "stream id" in r.json()["error"]
        async with dashboard.client(auth=False) as client:
            r = await client.post("/api/streams/x/set", json={"sla_ms": 150})
            assert r.status_code == 401
        await asyncio.sleep(0.3)
        assert len(got) == 1, "refused commands are not published"
    finally:
        await listener.stop()


def _cli(*args: str, env: dict[str, str], out: Path) -> subprocess.Popen[bytes]:
    with out.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "mobieye.cli", "dashboard", *args],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )


def test_cli_prints_a_url_that_logs_in(broker: MosquittoProcess, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    out = tmp_path / "dashboard.out"
    proc = _cli("--port", "0", "--broker", broker.url, env=env, out=out)
    try:
        deadline = time.monotonic() + 30
        url = None
        while url is None:
            assert proc.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            for line in out.read_text().splitlines():
                if line.startswith("MobiEye dashboard: http://127.0.0.1:"):
                    url = line.split(": ", 1)[1]
            time.sleep(0.1)
        assert "?token=" in url and "generated" in out.read_text()
        with httpx.Client(trust_env=False, timeout=5) as client:
            assert client.get(url).status_code == 200
            base = url.split("/?", 1)[0]
            assert client.get(base + "/api/streams").json() == []
    finally:
        proc.terminate()
        proc.wait(10)
    assert out.read_text().count("MobiEye dashboard:") == 1


def test_cli_without_a_broker_says_what_to_pass(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOBIEYE_")}
    r = subprocess.run(
        [sys.executable, "-m", "mobieye.cli", "dashboard"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 2 and "--broker" in r.stderr


@pytest.mark.asyncio
async def test_a_phone_grant_opens_the_phone_page_and_one_offer_only(
    dashboard: Dashboard,
) -> None:
    async with dashboard.client() as operator:
        r = await operator.post("/api/phone/grants")
        assert r.status_code == 200, r.text
        path = r.json()["path"]
        assert path.startswith("/phone?grant=") and dashboard.token not in path
    async with dashboard.client(auth=False) as phone:
        assert (await phone.post("/api/phone/grants")).status_code == 401  # grants need the token
        page = await phone.get(path)
        assert page.status_code == 200 and "mobieye_grant=" in page.headers["set-cookie"]
        assert (await phone.get("/static/phone.js")).status_code == 200
        assert (await phone.get("/static/live.js")).status_code == 200
        # The grant opens nothing of the operator's: not the fleet, not its commands.
        assert (await phone.get("/")).status_code == 401
        assert (await phone.get("/api/workers")).status_code == 401
        r = await phone.post("/api/streams/any/set", json={"sla_ms": 50})
        assert r.status_code == 401
        # Its one offer uses it up (no worker here: refused, but the grant is spent).
        r = await phone.post("/api/phone/offer", json={"sdp": "v=0", "type": "offer"})
        assert r.status_code == 503, r.text
        r = await phone.post("/api/phone/offer", json={"sdp": "v=0", "type": "offer"})
        assert r.status_code == 401
    async with dashboard.client(auth=False) as stranger:
        assert (await stranger.get("/phone?grant=made-up")).status_code == 401


class EndlessWorker:
    """A hostile worker on loopback: every answer is a chunked body that never ends (fast, or a
    trickle). The dashboard must stop reading, not buffer it or wait on it for ever."""

    def __init__(self, status: int, trickle: bool) -> None:
        self.status, self.trickle = status, trickle
        self.sent = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(f"HTTP/1.1 {self.status} X\r\ncontent-type: application/json\r\n"
                         "transfer-encoding: chunked\r\n\r\n".encode())  # fmt: skip
            chunk = b"x" * (10 if self.trickle else 65536)
            while True:
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.sent += len(chunk)
                await writer.drain()
                await asyncio.sleep(0.2 if self.trickle else 0)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("trickle", [False, True])
async def test_a_worker_answering_without_end_gets_a_502_not_the_dashboard_s_memory(
    dashboard: Dashboard, publisher: MqttLink, trickle: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mobieye.dashboard import proxy

    monkeypatch.setattr(proxy, "VIEW_TIMEOUT_S", 1.0)
    for status, method, path in ((200, "POST", "view"), (404, "GET", "mjpeg")):
        worker = EndlessWorker(status, trickle)
        server = await asyncio.start_server(worker.serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        wid, sid = f"bad-{status}", f"cam-{status}"
        url = f"http://127.0.0.1:{port}"
        state = WorkerState(id=wid, status="online", url=url, capacity=4)
        publisher.publish(topics.worker_state(P, wid), state, retain=True)
        publisher.publish(topics.stream_stats(P, sid), StreamStats(stream=sid, worker=wid, fps=1))
        try:
            async with dashboard.client() as client:

                async def known(sid: str = sid) -> bool:
                    return (await client.get(f"/api/streams/{sid}")).status_code == 200

                await eventually(known, what=f"stream {sid}")
                body = {"sdp": "v=0", "type": "offer"} if method == "POST" else None
                r = await client.request(method, f"/api/streams/{sid}/{path}", json=body,
                                         timeout=10)  # fmt: skip
            assert r.status_code == 502, (path, r.status_code, r.text[:200])
            assert "over 262144 bytes or too slowly" in r.json()["error"], r.text
            assert worker.sent < 4 * 1024 * 1024, worker.sent  # it stopped reading early
        finally:
            server.close()


@pytest.mark.asyncio
async def test_pages_get_expiring_turn_credentials_never_the_secret(dashboard: Dashboard) -> None:
    secret = "dashboard-turn-secret-0123456789"
    turn = TurnConfig(urls=["turn:turn.example.org:3478?transport=udp"], secret=secret, ttl_s=600)
    dashboard.app.state.webrtc = WebRTCConfig(
        ice_servers=[IceServer(urls=["stun:stun.example.org:3478"])], turn=turn
    )
    async with dashboard.client(auth=False) as stranger:
        assert (await stranger.get("/api/ice-servers")).status_code == 401
    async with dashboard.client() as operator:
        r = await operator.get("/api/ice-servers")
        path = (await operator.post("/api/phone/grants")).json()["path"]
    assert r.status_code == 200 and secret not in r.text
    assert r.headers["cache-control"] == "no-store"
    servers = r.json()["ice_servers"]
    assert servers[0] == {"urls": ["stun:stun.example.org:3478"], "username": None,
                          "credential": None}  # fmt: skip
    relay = servers[1]
    expires, user = relay["username"].split(":")
    assert user == "mobieye" and time.time() + 590 < int(expires) <= time.time() + 601
    assert relay["credential"] and relay["credential"] != secret
    async with dashboard.client(auth=False) as phone:
        await phone.get(path)  # the grant's cookie
        assert (await phone.get("/api/ice-servers")).status_code == 200
        # Asking for servers does not spend the grant: its one offer is still to come.
        r = await phone.post("/api/phone/offer", json={"sdp": "v=0", "type": "offer"})
        assert r.status_code == 503, r.text
