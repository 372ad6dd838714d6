"""MqttLink against a real Mosquitto: round trips, last will, bad payloads, restarts, auth."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from mobieye.config import MqttConfig
from mobieye.fleet import topics
from mobieye.fleet.payloads import ObjectEvent, WorkerState, parse_payload, worker_will
from mobieye.mqtt.broker import EmbeddedBroker, MosquittoProcess, free_port
from mobieye.mqtt.client import MqttLink
from mobieye.mqtt.connection import check_connect
from mobieye.mqtt.errors import BrokerError
from tests.realparts import need

from .conftest import wait_until

P = "mobieye"
REPO = Path(__file__).resolve().parents[2]

Received = list[tuple[str, bytes]]


def collector() -> tuple[Received, Callable[[str, bytes], None]]:
    got: Received = []

    def handler(topic: str, payload: bytes) -> None:
        got.append((topic, payload))

    return got, handler


async def started(link: MqttLink) -> MqttLink:
    await link.start()
    await asyncio.wait_for(link.connected.wait(), 5)
    return link


def listeners(port: int) -> list[str]:
    """Local addresses listening on ``port``, from /proc (IPv4 and IPv6)."""
    found = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(name):
            continue
        with open(name) as f:
            next(f)
            for line in f:
                local, state = line.split()[1], line.split()[3]
                addr, hexport = local.rsplit(":", 1)
                if int(hexport, 16) == port and state == "0A":  # 0A: LISTEN
                    found.append(addr)
    return found


@pytest.mark.asyncio
async def test_round_trip(mosquitto: MosquittoProcess) -> None:
    cfg = MqttConfig(broker=mosquitto.url)
    got: list[ObjectEvent] = []

    async def on_event(topic: str, payload: bytes) -> None:  # async handlers work too
        got.append(parse_payload(ObjectEvent, payload, topic))

    sub = MqttLink(cfg, "sub")
    await sub.subscribe(topics.events(P), on_event)
    await started(sub)
    pub = await started(MqttLink(cfg, "pub"))
    event = ObjectEvent(
        type="new", stream="s1", track_id=1, label="car", box=[0, 0, 0.5, 0.5], score=0.8, ts=1.0
    )
    pub.publish(topics.events(P), event)
    await wait_until(lambda: got, what="the event")
    assert got == [event]
    # publish() is also safe from another thread (e.g. a detector's executor).
    await asyncio.to_thread(pub.publish, topics.events(P), event.model_copy(update={"type": "end"}))
    await wait_until(lambda: len(got) == 2, what="the event from a thread")
    assert got[1].type == "end"
    await pub.stop()
    await sub.stop()
    assert not sub.connected.is_set()


@pytest.mark.asyncio
async def test_retained_state_and_last_will_on_sigkill(mosquitto: MosquittoProcess) -> None:
    # A worker in another process, SIGKILLed: the broker must publish its will for it.
    script = textwrap.dedent(
        f"""
        import asyncio
        from mobieye.config import MqttConfig
        from mobieye.fleet import topics
        from mobieye.fleet.payloads import WorkerState, worker_will
        from mobieye.mqtt.client import MqttLink

        async def main():
            cfg = MqttConfig(broker={mosquitto.url!r}, keepalive_s=1)
            link = MqttLink(cfg, "worker-w1", will=worker_will({P!r}, "w1"))
            link.publish(topics.worker_state({P!r}, "w1"),
                         WorkerState(id="w1", status="online", capacity=2), retain=True)
            await link.start()
            await link.connected.wait()
            while link.queued:
                await asyncio.sleep(0.01)
            print("ready", flush=True)
            await asyncio.sleep(60)

        asyncio.run(main())
        """
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE, cwd=REPO
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode()
        assert line.strip() == "ready"

        states: list[WorkerState] = []
        sub = MqttLink(MqttConfig(broker=mosquitto.url), "dashboard")
        await sub.subscribe(
            topics.all_worker_states(P),
            lambda t, p: states.append(parse_payload(WorkerState, p, t)),
        )
        await started(sub)
        await wait_until(lambda: states, what="the retained online state")
        assert states[0].status == "online" and states[0].capacity == 2

        proc.send_signal(signal.SIGKILL)
        await wait_until(lambda: len(states) >= 2, what="the last will")
        assert states[-1].id == "w1" and states[-1].status == "offline"
        await sub.stop()
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()

    # The will was retained: a dashboard that starts later still sees the worker offline.
    late: list[WorkerState] = []
    sub2 = MqttLink(MqttConfig(broker=mosquitto.url), "late-dashboard")
    await sub2.subscribe(
        topics.worker_state(P, "w1"), lambda t, p: late.append(parse_payload(WorkerState, p, t))
    )
    await started(sub2)
    await wait_until(lambda: late, what="the retained offline state")
    assert late[0].status == "offline"
    await sub2.stop()


@pytest.mark.asyncio
async def test_clean_stop_publishes_final_state(mosquitto: MosquittoProcess) -> None:
    cfg = MqttConfig(broker=mosquitto.url)
    got, handler = collector()
    sub = MqttLink(cfg, "sub")
    await sub.subscribe(topics.all_worker_states(P), handler)
    await started(sub)
    worker = await started(MqttLink(cfg, "w2", will=worker_will(P, "w2")))
    topic = topics.worker_state(P, "w2")
    worker.publish(topic, WorkerState(id="w2", status="online"), retain=True)
    await worker.stop(final=[(topic, WorkerState.offline("w2"), True)])
    await wait_until(lambda: len(got) >= 2, what="the final offline state")
    assert [parse_payload(WorkerState, p).status for _, p in got] == ["online", "offline"]
    await sub.stop()


@pytest.mark.asyncio
async def test_malformed_payload_is_logged_and_ignored(
    mosquitto: MosquittoProcess, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = MqttConfig(broker=mosquitto.url)
    good: list[WorkerState] = []
    seen: list[str] = []

    def on_state(topic: str, payload: bytes) -> None:
        good.append(parse_payload(WorkerState, payload, topic))

    def buggy(topic: str, payload: bytes) -> None:
        seen.append(topic)
        raise RuntimeError("handler bug")

    sub = MqttLink(cfg, "sub")
    await sub.subscribe(topics.all_worker_states(P), on_state)
    await sub.subscribe(topics.everything(P), buggy)
    await started(sub)
    pub = await started(MqttLink(cfg, "pub"))
    caplog.set_level(logging.WARNING, logger="mobieye.mqtt")
    pub.publish(topics.worker_state(P, "w1"), b"{not json")
    pub.publish(topics.worker_state(P, "w1"), b'{"id": "w1", "status": "sleeping"}')
    pub.publish(topics.worker_state(P, "w1"), WorkerState(id="w1", status="online"))
    await wait_until(lambda: good, what="the good payload after the bad ones")
    assert good[0].status == "online"
    assert len(seen) == 3  # the buggy handler saw every message and never stopped the link
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("mobieye/workers/w1/state" in w and "Invalid JSON" in w for w in warnings)
    assert any("status" in w and "'online' or 'offline'" in w for w in warnings)
    assert any("handler bug" in (r.exc_text or "") for r in caplog.records)
    assert sub.connected.is_set()
    await pub.stop()
    await sub.stop()


@pytest.mark.asyncio
async def test_broker_restart_reconnects_and_delivers_the_outbox(
    mosquitto: MosquittoProcess,
) -> None:
    cfg = MqttConfig(broker=mosquitto.url, keepalive_s=2)
    got, handler = collector()
    # One link that hears itself: it subscribes before it drains, so it sees its own outbox.
    link = MqttLink(cfg, "self")
    await link.subscribe("test/#", handler)
    await started(link)
    link.publish("test/state", "v0", retain=True)
    await wait_until(lambda: got, what="v0")

    await asyncio.to_thread(mosquitto.stop)
    await wait_until(lambda: not link.connected.is_set(), what="the link to notice")
    assert link.last_error is not None and "lost the connection" in link.last_error
    for i in (1, 2, 3):  # the owner carries on; nothing raises
        link.publish("test/state", f"v{i}", retain=True)
        link.publish("test/event", f"e{i}")
    assert link.queued == 4  # three events and one coalesced state
    await asyncio.sleep(0.3)
    # same port; persistence off, so the broker lost the retained v0
    await asyncio.to_thread(mosquitto.start)

    await wait_until(lambda: link.connected.is_set() and not link.queued, 8, "the reconnect")
    await wait_until(lambda: len(got) >= 5, what="the outbox")
    after = [p.decode() for _, p in got[1:]]
    assert after == ["v3", "e1", "e2", "e3"]  # retained states go first
    assert link.last_error is None

    # The broker holds the latest state again, so a newcomer gets it.
    late, late_handler = collector()
    other = MqttLink(cfg, "other")
    await other.subscribe("test/state", late_handler)
    await started(other)
    await wait_until(lambda: late, what="the re-published retained state")
    assert late[0][1] == b"v3"
    await other.stop()
    await link.stop()


@pytest.mark.asyncio
async def test_bounded_outbox_drops_oldest_and_coalesces_states(
    mosquitto: MosquittoProcess,
) -> None:
    link = MqttLink(MqttConfig(broker=mosquitto.url), "bounded", max_queued=3)
    for i in range(5):
        link.publish("test/event", str(i))
        link.publish("test/state", str(i), retain=True)
    assert (link.queued, link.dropped) == (4, 2)
    got, handler = collector()
    await link.subscribe("test/#", handler)
    await started(link)
    await wait_until(lambda: len(got) >= 4, what="the outbox")
    assert sorted((t, p.decode()) for t, p in got) == [
        ("test/event", "2"),
        ("test/event", "3"),
        ("test/event", "4"),
        ("test/state", "4"),
    ]
    await link.stop()


@pytest.mark.asyncio
async def test_wrong_credentials(
    mosquitto_auth: MosquittoProcess, caplog: pytest.LogCaptureFixture
) -> None:
    url = mosquitto_auth.url
    port = mosquitto_auth.port
    expected = f"MQTT broker 127.0.0.1:{port} refused the credentials of user 'mobieye'"
    bad = MqttConfig(broker=url, username="mobieye", password="wrong")

    with pytest.raises(BrokerError) as info:
        await check_connect(bad, timeout_s=3)
    assert str(info.value) == expected
    with pytest.raises(BrokerError, match="refused an anonymous connection"):
        await check_connect(MqttConfig(broker=url), timeout_s=3)

    caplog.set_level(logging.DEBUG, logger="mobieye.mqtt")
    link = MqttLink(bad, "bad", backoff_min_s=0.02, backoff_max_s=0.05)
    await link.start()
    await wait_until(lambda: link.last_error == expected, what="last_error")
    await asyncio.sleep(0.5)  # ~10 more attempts, each refused
    assert not link.connected.is_set()
    await link.stop()
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name == "mobieye.mqtt"]
    assert expected in loud[0].getMessage()
    assert 3 <= len(loud) <= 5  # the first few, then one "retrying quietly", then DEBUG only

    good = MqttConfig(broker=url, username="mobieye", password="s3cret")
    await check_connect(good, timeout_s=3)
    link = await started(MqttLink(good, "good"))
    assert link.last_error is None
    await link.stop()


@pytest.mark.asyncio
async def test_unreachable_broker() -> None:
    cfg = MqttConfig(broker=f"mqtt://127.0.0.1:{free_port()}")
    with pytest.raises(BrokerError, match=r"cannot connect to MQTT broker 127\.0\.0\.1:\d+"):
        await check_connect(cfg, timeout_s=2)
    link = MqttLink(cfg, "nowhere", backoff_min_s=0.02, backoff_max_s=0.05)
    link.publish("test/x", "queued while no broker")
    await link.start()
    await wait_until(lambda: link.last_error is not None, what="last_error")
    assert "Connection refused" in (link.last_error or "")
    await link.stop()  # returns promptly although never connected


def test_mosquitto_binds_loopback_only(mosquitto: MosquittoProcess) -> None:
    assert listeners(mosquitto.port) == ["0100007F"]  # 127.0.0.1, little-endian hex


@pytest.mark.asyncio
async def test_embedded_broker_loopback_round_trip() -> None:
    broker = EmbeddedBroker()
    url = await broker.start()
    try:
        assert broker.port is not None
        assert url == f"mqtt://127.0.0.1:{broker.port}"
        assert listeners(broker.port) == ["0100007F"]
        cfg = MqttConfig(broker=url)
        got, handler = collector()
        link = MqttLink(cfg, "demo")
        await link.subscribe(topics.events(P), handler)
        await started(link)
        link.publish(topics.events(P), b"hello")
        await wait_until(lambda: got, what="the round trip")
        assert got == [(topics.events(P), b"hello")]
        await link.stop()
    finally:
        await broker.stop()


def make_certs(tmp: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1: (ca, cert, key)."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    (tmp / "ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for args in (
        [
            "req",
            "-x509",
            *ec,
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "1",
            "-subj",
            "/CN=mobieye-test-ca",
        ],
        ["req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"],
        [
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "1",
            "-extfile",
            "ext",
        ],
    ):
        subprocess.run(["openssl", *args], cwd=tmp, check=True, capture_output=True, timeout=10)
    return tmp / "ca.crt", tmp / "server.crt", tmp / "server.key"


@pytest.mark.asyncio
async def test_tls(tmp_path: Path) -> None:
    need("openssl", "mosquitto")
    ca, cert, key = make_certs(tmp_path)
    async with MosquittoProcess(certfile=cert, keyfile=key) as broker:
        assert broker.url.startswith("mqtts://127.0.0.1:")
        cfg = MqttConfig(broker=broker.url, ca_file=str(ca))
        await check_connect(cfg, timeout_s=3)
        got, handler = collector()
        link = MqttLink(cfg, "tls")
        await link.subscribe("test/tls", handler)
        await started(link)
        link.publish("test/tls", b"secret")
        await wait_until(lambda: got, what="the message over TLS")
        await link.stop()
        # Without our CA the system's trust store rejects the broker's certificate.
        with pytest.raises(BrokerError, match="CERTIFICATE_VERIFY_FAILED"):
            await check_connect(MqttConfig(broker=broker.url), timeout_s=3)
    with pytest.raises(BrokerError, match="cannot load the MQTT CA file"):
        MqttLink(MqttConfig(broker="mqtts://127.0.0.1:1", ca_file=str(tmp_path / "none")), "x")
