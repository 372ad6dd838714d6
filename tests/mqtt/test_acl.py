"""The shipped broker security against a real Mosquitto: docker/mosquitto.conf with its
listener moved to 127.0.0.1:PORT and its password file made here by mosquitto_passwd, and
docker/mosquitto.acl read as it is, from the repository.

Mosquitto drops a refused publish without a word to the client, and grants any subscription
(2.0 checks read access per delivered message). So a refusal shows as a reader of that topic
never getting the message. No sleeps: the refused message is sent at QoS 1 (acknowledged, so
the broker has routed it), then an allowed client sends a marker that the reader also
subscribes to; the broker delivers in order, so once the reader has the marker, it would have
had the refused message before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import pwd
import re
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import aiomqtt
import paho.mqtt.client as paho
import pytest
from aiomqtt.exceptions import MqttError
from paho.mqtt.enums import CallbackAPIVersion

from mobieye.config import MqttConfig, Settings, WorkerConfig
from mobieye.fleet import topics
from mobieye.fleet.directory import WorkerDirectory
from mobieye.fleet.errors import PayloadError
from mobieye.fleet.payloads import (
    ObjectEvent,
    WorkerState,
    parse_payload,
)
from mobieye.fleet.presence import FleetPresence
from mobieye.mqtt.broker import MOSQUITTO
from mobieye.mqtt.client import MqttLink
from mobieye.mqtt.connection import check_connect
from mobieye.mqtt.errors import BrokerError
from mobieye.mqtt.preflight import SHARED_WORKER_ACCOUNT, worker_account_problem
from mobieye.runtime import free_port
from tests.fleet_fakes import FakeStream, FakeWorker
from tests.realparts import need

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "docker" / "mosquitto.conf"
ACL = REPO / "docker" / "mosquitto.acl"
P = MqttConfig().prefix  # the ACL is written for the default prefix
WAIT_S = 5.0

# Two named workers (username = worker id), the pooled account of scaled replicas, the roles.
ACCOUNTS = ("w1", "w2", "worker", "edge", "dashboard")
_ids = itertools.count()
T = TypeVar("T")


def _passwd_binary() -> str:
    found = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    if not os.access(found, os.X_OK):
        need("mosquitto")
    return found


@dataclass
class Broker:
    port: int
    passwords: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def mqtt(self, account: str | None) -> MqttConfig:
        """The project's MQTT settings for ``account`` (None: anonymous)."""
        password = self.passwords.get(account) if account else None
        return MqttConfig(broker=self.url, username=account, password=password)

    def client(
        self, account: str | None, password: str | None = None, will: aiomqtt.Will | None = None
    ) -> aiomqtt.Client:
        if password is None and account is not None:
            password = self.passwords[account]
        return aiomqtt.Client(
            "127.0.0.1",
            self.port,
            username=account,
            password=password,
            identifier=f"acl-test-{account or 'anonymous'}-{next(_ids)}",
            will=will,
            timeout=WAIT_S,
        )

    def denied_publishes(self, client_id_start: str) -> list[str]:
        """Topics the broker refused to ``client_id_start...`` (its debug log says so)."""
        text = self.log.read_text(errors="replace")
        pattern = (
            rf"Denied PUBLISH from {re.escape(client_id_start)}\S* \(d\d, q\d, r\d, m\d+, '([^']*)'"
        )
        return re.findall(pattern, text)


def shipped_conf(port: int, passwd: Path) -> str:
    """docker/mosquitto.conf for a test: the listener on 127.0.0.1:PORT, this password file,
    the repository's ACL file, logs on stderr (unbuffered) including refusals."""
    directives = [
        line.split()
        for line in CONF.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    names = [d[0] for d in directives]
    # The shipped file must keep what this test relies on, or it would test nothing.
    assert ["allow_anonymous", "false"] in directives, "docker/mosquitto.conf lets anyone in"
    assert "password_file" in names and "acl_file" in names
    out = []
    for words in directives:
        key = words[0]
        if key == "listener":
            out.append(f"listener {port} 127.0.0.1")
        elif key == "password_file":
            out.append(f"password_file {passwd}")
        elif key == "acl_file":
            out.append(f"acl_file {ACL}")
        elif key not in ("log_dest", "log_type"):
            out.append(" ".join(words))
    out += ["log_dest stderr", "log_type all"]
    # As root mosquitto would switch to its own user, which a user namespace does not allow.
    out.append(f"user {pwd.getpwuid(os.getuid()).pw_name}")
    return "\n".join(out) + "\n"


def make_passwd(path: Path, passwords: Mapping[str, str]) -> None:
    binary = _passwd_binary()
    for i, (user, password) in enumerate(passwords.items()):
        create = ["-c"] if i == 0 else []
        subprocess.run([binary, *create, "-b", str(path), user, password], check=True, timeout=30)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    need("mosquitto")
    tmp = tmp_path_factory.mktemp("acl")
    passwords = {a: f"{a}-{os.urandom(8).hex()}" for a in ACCOUNTS}
    passwd = tmp / "passwd"
    make_passwd(passwd, passwords)
    log = tmp / "mosquitto.log"
    for _attempt in range(3):  # a free port may be taken before mosquitto binds it
        port = free_port()
        conf = tmp / "mosquitto.conf"
        conf.write_text(shipped_conf(port, passwd))
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT
            )
        if _wait_listening(proc, port):
            break
        proc.kill()
        proc.wait()
    else:
        pytest.fail(f"mosquitto did not start:\n{log.read_text(errors='replace')[-2000:]}")
    try:
        yield Broker(port, passwords, log, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_listening(proc: subprocess.Popen[bytes], port: int) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


# --- a reader that records what the broker delivers to it --------------------------------------


@dataclass
class Reader:
    client: aiomqtt.Client
    got: list[tuple[str, bytes, bool]] = field(default_factory=list)
    _new: asyncio.Event = field(default_factory=asyncio.Event)

    async def pump(self) -> None:
        async for message in self.client.messages:
            payload = message.payload
            if isinstance(payload, (bytes, bytearray)):
                raw = bytes(payload)
            else:
                raw = b"" if payload is None else str(payload).encode()
            self.got.append((message.topic.value, raw, bool(message.retain)))
            self._new.set()

    def payloads(self, topic: str) -> list[bytes]:
        return [p for t, p, _ in self.got if t == topic]

    async def wait_for(self, topic: str, payload: bytes | None = None) -> bytes:
        """The first message on ``topic`` (with ``payload``, if given); fail after WAIT_S."""

        def found() -> bytes | None:
            for p in self.payloads(topic):
                if payload is None or p == payload:
                    return p
            return None

        return await self.wait_until(found, f"{topic} {payload!r}")

    async def wait_until(self, check: Callable[[], T | None], what: str) -> T:
        """``check()``'s first non-None answer as messages arrive; fail after WAIT_S."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while (answer := check()) is None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"no {what} within {WAIT_S} s; got {self.got}")
            self._new.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait(), remaining)
        return answer

    def worker_status(self, worker_id: str) -> str | None:
        """The status in the newest valid state of ``worker_id`` (None: none yet)."""
        for payload in reversed(self.payloads(topics.worker_state(P, worker_id))):
            with contextlib.suppress(PayloadError):
                return parse_payload(WorkerState, payload).status
        return None


@contextlib.asynccontextmanager
async def reading(broker: Broker, account: str, *filters: str) -> AsyncIterator[Reader]:
    async with broker.client(account) as client:
        for topic_filter in filters:
            await client.subscribe(topic_filter, qos=1)
        reader = Reader(client)
        task = asyncio.create_task(reader.pump())
        try:
            yield reader
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, MqttError):
                await task


def _unique(what: str) -> bytes:
    return f"{what}-{next(_ids)}-{time.monotonic_ns()}".encode()


async def assert_delivered(sender: aiomqtt.Client, topic: str, reader: Reader) -> None:
    payload = _unique("allowed")
    await sender.publish(topic, payload, qos=1)
    await reader.wait_for(topic, payload)


async def assert_dropped(
    sender: aiomqtt.Client,
    topic: str,
    reader: Reader,
    marker: tuple[aiomqtt.Client, str],
    retain: bool = False,
) -> None:
    """``sender`` may not publish on ``topic``: ``reader`` (who may read it) never gets it."""
    payload = _unique("refused")
    await sender.publish(topic, payload, qos=1, retain=retain)  # acknowledged: routed
    marker_client, marker_topic = marker
    sync = _unique("marker")
    await marker_client.publish(marker_topic, sync, qos=1)
    await reader.wait_for(marker_topic, sync)
    assert payload not in reader.payloads(topic), f"{topic} was delivered"


# --- logging in --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_anonymous_and_wrong_credentials_are_refused(broker: Broker) -> None:
    with pytest.raises(BrokerError, match="refused an anonymous connection"):
        await check_connect(broker.mqtt(None), timeout_s=WAIT_S)
    wrong = broker.mqtt("w1").model_copy(update={"password": "not-the-password"})
    with pytest.raises(BrokerError, match="refused the credentials of user 'w1'"):
        await check_connect(wrong, timeout_s=WAIT_S)
    stranger = MqttConfig(broker=broker.url, username="intruder", password="whatever-it-is")
    with pytest.raises(BrokerError, match="refused the credentials of user 'intruder'"):
        await check_connect(stranger, timeout_s=WAIT_S)
    for account in ACCOUNTS:
        await check_connect(broker.mqtt(account), timeout_s=WAIT_S)


# --- named workers -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_named_worker_publishes_its_own_state_and_its_streams(broker: Broker) -> None:
    async with (
        reading(broker, "dashboard", topics.everything(P)) as dash,
        reading(broker, "edge", topics.all_worker_states(P)) as edge,
        broker.client("w1") as w1,
    ):
        await assert_delivered(w1, topics.worker_state(P, "w1"), edge)
        for topic in (
            topics.worker_state(P, "w1"),
            topics.stream_stats(P, "s-any"),
            topics.stream_state(P, "s-any"),
            topics.events(P),
        ):
            await assert_delivered(w1, topic, dash)
        # A retained state, and the empty retained payload that clears an ended stream's.
        await w1.publish(topics.stream_state(P, "s-any"), b"{}", qos=1, retain=True)
        await w1.publish(topics.stream_state(P, "s-any"), b"", qos=1, retain=True)
        await dash.wait_for(topics.stream_state(P, "s-any"), b"")


@pytest.mark.asyncio
async def test_a_named_worker_cannot_pose_as_another_or_send_commands(broker: Broker) -> None:
    async with (
        reading(broker, "edge", topics.all_worker_states(P)) as edge,
        reading(broker, "w2", topics.worker_set(P, "w2"), topics.all_stream_sets(P)) as w2,
        broker.client("w1") as w1,
        broker.client("dashboard") as dashboard,
    ):
        # The marker: w1's own state, which the edge reads.
        own_state = (w1, topics.worker_state(P, "w1"))
        await assert_dropped(w1, topics.worker_state(P, "w2"), edge, own_state, retain=True)
        # Commands: w2 reads its own and every stream's; only the dashboard may send them.
        command_marker = (dashboard, topics.worker_set(P, "w2"))
        await assert_dropped(w1, topics.worker_set(P, "w2"), w2, command_marker)
        await assert_dropped(w1, topics.stream_set(P, "s-any"), w2, command_marker)
        await assert_dropped(w1, topics.worker_set(P, "w1"), w2, command_marker)
    refused = broker.denied_publishes("acl-test-w1-")
    assert topics.worker_state(P, "w2") in refused and topics.stream_set(P, "s-any") in refused


@pytest.mark.asyncio
async def test_a_named_worker_reads_only_its_own_commands(broker: Broker) -> None:
    async with (
        reading(broker, "w1", topics.all_worker_sets(P), topics.all_stream_sets(P)) as w1,
        reading(broker, "w2", topics.worker_set(P, "w2")) as w2,
        broker.client("dashboard") as dashboard,
    ):
        await assert_delivered(dashboard, topics.worker_set(P, "w1"), w1)
        await assert_delivered(dashboard, topics.stream_set(P, "s-any"), w1)
        # w1 subscribed to every worker's commands, but is not given w2's.
        await assert_delivered(dashboard, topics.worker_set(P, "w2"), w2)
        sync = _unique("marker")
        await dashboard.publish(topics.worker_set(P, "w1"), sync, qos=1)
        await w1.wait_for(topics.worker_set(P, "w1"), sync)
        assert not w1.payloads(topics.worker_set(P, "w2"))


@pytest.mark.asyncio
async def test_a_last_will_is_delivered_only_on_the_workers_own_state(broker: Broker) -> None:
    async with reading(broker, "edge", topics.all_worker_states(P)) as edge:
        own = _unique("will-own")
        forged = _unique("will-forged")
        await asyncio.to_thread(_die_with_will, broker, "w1", topics.worker_state(P, "w2"), forged)
        await asyncio.to_thread(_die_with_will, broker, "w1", topics.worker_state(P, "w1"), own)
        await edge.wait_for(topics.worker_state(P, "w1"), own)  # after the forged one, if any
        assert forged not in edge.payloads(topics.worker_state(P, "w2"))


def _die_with_will(broker: Broker, account: str, topic: str, payload: bytes) -> None:
    """Connect with a last will, then drop the socket without DISCONNECT (a crash)."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"acl-will-{next(_ids)}")
    client.username_pw_set(account, broker.passwords[account])
    client.will_set(topic, payload, qos=1, retain=True)
    connected: list[bool] = []
    client.on_connect = lambda c, u, f, rc, p: connected.append(not rc.is_failure)
    client.connect("127.0.0.1", broker.port, keepalive=30)
    deadline = time.monotonic() + WAIT_S
    while not connected and time.monotonic() < deadline:
        client.loop(timeout=0.1)
    assert connected == [True], f"{account} could not connect"
    sock = client.socket()
    assert sock is not None
    sock.close()


# --- the pooled worker account -----------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_shared_worker_account_writes_any_worker_state_but_no_commands(
    broker: Broker,
) -> None:
    async with (
        reading(broker, "edge", topics.all_worker_states(P)) as edge,
        reading(broker, "w1", topics.worker_set(P, "w1")) as w1,
        broker.client("worker") as worker,
        broker.client("dashboard") as dashboard,
    ):
        for worker_id in ("abc123def456-8000", "w1"):
            await assert_delivered(worker, topics.worker_state(P, worker_id), edge)
        marker = (dashboard, topics.worker_set(P, "w1"))
        await assert_dropped(worker, topics.worker_set(P, "w1"), w1, marker)


# --- edges -------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_an_edge_reads_worker_states_and_publishes_nothing(broker: Broker) -> None:
    await_state = _unique("retained")
    async with broker.client("w1") as w1:
        await w1.publish(topics.worker_state(P, "w1"), await_state, qos=1, retain=True)
    async with (
        reading(broker, "edge", topics.everything(P)) as edge_reader,
        reading(broker, "dashboard", topics.everything(P)) as dash,
        reading(broker, "w1", topics.worker_set(P, "w1"), topics.all_stream_sets(P)) as w1r,
        broker.client("edge") as edge,
        broker.client("w1") as w1,
        broker.client("dashboard") as dashboard,
    ):
        await edge_reader.wait_for(topics.worker_state(P, "w1"), await_state)  # retained
        state_marker = (w1, topics.worker_state(P, "w1"))
        for topic in (
            topics.worker_state(P, "w1"),
            topics.worker_state(P, "edge"),  # the patterns' "own worker state", taken back
            topics.stream_stats(P, "s-any"),
            topics.stream_state(P, "s-any"),
            topics.events(P),
        ):
            await assert_dropped(edge, topic, dash, state_marker)
        command_marker = (dashboard, topics.worker_set(P, "w1"))
        await assert_dropped(edge, topics.worker_set(P, "w1"), w1r, command_marker)
        await assert_dropped(edge, topics.stream_set(P, "s-any"), w1r, command_marker)
        # Subscribed to everything, it is given the workers' states only.
        await assert_delivered(w1, topics.stream_stats(P, "s-any"), dash)
        await assert_delivered(dashboard, topics.stream_set(P, "s-any"), w1r)
        sync = _unique("marker")
        await w1.publish(topics.worker_state(P, "w1"), sync, qos=1)
        await edge_reader.wait_for(topics.worker_state(P, "w1"), sync)
        assert {t for t, _, _ in edge_reader.got} == {topics.worker_state(P, "w1")}


# --- the dashboard -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_dashboard_reads_the_fleet_and_sends_commands(broker: Broker) -> None:
    async with (
        reading(
            broker,
            "dashboard",
            topics.all_worker_states(P),
            topics.all_stream_stats(P),
            topics.all_stream_states(P),
            topics.events(P),
        ) as dash,
        reading(broker, "w1", topics.worker_set(P, "w1"), topics.all_stream_sets(P)) as w1r,
        reading(broker, "edge", topics.all_worker_states(P)) as edge,
        broker.client("dashboard") as dashboard,
        broker.client("w1") as w1,
    ):
        for topic in (
            topics.worker_state(P, "w1"),
            topics.stream_stats(P, "s1"),
            topics.stream_state(P, "s1"),
            topics.events(P),
        ):
            await assert_delivered(w1, topic, dash)
        await assert_delivered(dashboard, topics.stream_set(P, "s1"), w1r)
        await assert_delivered(dashboard, topics.worker_set(P, "w1"), w1r)
        # It cannot announce a worker, not even one named after itself.
        marker = (w1, topics.worker_state(P, "w1"))
        await assert_dropped(dashboard, topics.worker_state(P, "w1"), edge, marker)
        await assert_dropped(dashboard, topics.worker_state(P, "dashboard"), edge, marker)


# --- the real code under the ACL ---------------------------------------------------------------


def _worker_settings(broker: Broker, account: str) -> Settings:
    mqtt = broker.mqtt(account).model_copy(update={"stats_period_s": 0.2, "keepalive_s": 2})
    return Settings(mqtt=mqtt, worker=WorkerConfig(host="127.0.0.1", port=free_port()))


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("account", "worker_id"), [("w1", "w1"), ("worker", "replica-1a2b3c-8000")]
)
async def test_fleet_presence_works_under_the_worker_role(
    broker: Broker, account: str, worker_id: str
) -> None:
    """The real FleetPresence (will, subscriptions, states, stats, events, commands, clears)
    with worker credentials; the real dashboard link sends a command; the real edge directory
    finds the worker; the broker refuses nothing any of them sends."""
    stream = FakeStream("s-presence")
    worker = FakeWorker(worker_id, {})
    presence = FleetPresence(_worker_settings(broker, account), worker)
    stream_state = topics.stream_state(P, stream.stream_id)
    dashboard = MqttLink(broker.mqtt("dashboard"), f"mobieye-dashboard-acl-{next(_ids)}")
    directory = WorkerDirectory(broker.mqtt("edge"), f"mobieye-edge-acl-{next(_ids)}")
    async with reading(
        broker,
        "dashboard",
        topics.all_worker_states(P),
        topics.all_stream_stats(P),
        topics.all_stream_states(P),
        topics.events(P),
    ) as dash:
        await presence.start()
        await dashboard.start()
        await directory.start()
        try:
            await dash.wait_until(lambda: dash.worker_status(worker_id) == "online" or None,
                                  f"online state of {worker_id}")  # fmt: skip
            assert await directory.wait_for_candidates(WAIT_S)
            assert [w.id for w in directory.candidates()] == [worker_id]

            worker.streams[stream.stream_id] = stream
            presence.stream_started(stream)
            await dash.wait_for(stream_state)
            await dash.wait_for(topics.stream_stats(P, stream.stream_id))
            assert stream.on_event is not None
            stream.on_event(
                ObjectEvent(type="new", stream=stream.stream_id, track_id=1, label="person",
                            box=[0.1, 0.1, 0.2, 0.3], score=0.9, ts=time.time())
            )  # fmt: skip
            await dash.wait_for(topics.events(P))

            # A command from the dashboard's link, applied and mirrored by the worker.
            await asyncio.wait_for(dashboard.connected.wait(), WAIT_S)
            dashboard.publish(
                topics.stream_set(P, stream.stream_id), b'{"keyframe_interval": 9}', qos=1
            )
            deadline = time.monotonic() + WAIT_S
            while not any(b'"keyframe_interval":9' in p for p in dash.payloads(stream_state)):
                assert time.monotonic() < deadline, f"no mirrored state: {dash.got}"
                await asyncio.sleep(0.02)
            assert [c.keyframe_interval for c in stream.applied] == [9]

            del worker.streams[stream.stream_id]
            presence.stream_ended(stream.stream_id)
            await dash.wait_for(stream_state, b"")
        finally:
            await presence.stop()
            await dashboard.stop()
            await directory.stop()
        # stop() sends the offline state itself (a clean disconnect suppresses the will).
        await dash.wait_until(lambda: dash.worker_status(worker_id) == "offline" or None,
                              f"offline state of {worker_id}")  # fmt: skip
    assert broker.denied_publishes(f"mobieye-worker-{worker_id}-") == []
    assert broker.denied_publishes("mobieye-dashboard-acl-") == []


@pytest.mark.asyncio
async def test_a_named_worker_with_another_id_is_invisible(broker: Broker) -> None:
    """Account w1 running as worker w2: the broker drops its state (and logs why), so set
    MOBIEYE_WORKER__ID to the username, or use the shared "worker" account."""
    presence = FleetPresence(_worker_settings(broker, "w1"), FakeWorker("w2-by-mistake", {}))
    async with reading(broker, "edge", topics.all_worker_states(P)) as edge:
        await presence.start()
        try:
            deadline = time.monotonic() + WAIT_S
            while not broker.denied_publishes("mobieye-worker-w2-by-mistake-"):
                assert time.monotonic() < deadline, "the broker did not refuse the state"
                await asyncio.sleep(0.05)
        finally:
            await presence.stop()
        async with broker.client("w1") as w1:  # the marker: after everything it sent
            await w1.publish(topics.worker_state(P, "w1"), b"marker", qos=1)
        await edge.wait_for(topics.worker_state(P, "w1"), b"marker")
        assert not edge.payloads(topics.worker_state(P, "w2-by-mistake"))
    # What the worker warns at start, before the broker silently drops its state.
    problem = worker_account_problem(_worker_settings(broker, "w1").mqtt, "w2-by-mistake")
    assert problem is not None and "'w1' is neither worker.id 'w2-by-mistake'" in problem
    for fine in ("w1", SHARED_WORKER_ACCOUNT):
        assert worker_account_problem(_worker_settings(broker, fine).mqtt, "w1") is None
