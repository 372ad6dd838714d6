"""A real Mosquitto and the dashboard served by uvicorn on a free 127.0.0.1 port, in the test's
own event loop, with a real MQTT link to publish from."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
import pytest_asyncio
import uvicorn
from fastapi import FastAPI

from mobieye.config import MqttConfig
from mobieye.credentials import generate_token
from mobieye.dashboard.app import create_dashboard_app
from mobieye.mqtt.broker import MosquittoProcess
from mobieye.mqtt.client import MqttLink
from tests.realparts import need


@pytest.fixture
def broker() -> Iterator[MosquittoProcess]:
    need("mosquitto")
    mosquitto = MosquittoProcess()
    mosquitto.start()
    try:
        yield mosquitto
    finally:
        mosquitto.close()


@dataclass
class Dashboard:
    url: str
    token: str
    app: FastAPI

    def client(self, auth: bool = True) -> httpx.AsyncClient:
        headers = {"authorization": f"Bearer {self.token}"} if auth else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, trust_env=False, timeout=5)


async def eventually(
    probe: Callable[[], Awaitable[object]], timeout_s: float = 5.0, what: str = "condition"
) -> object:
    """Await ``probe()`` until it returns something truthy; fail after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        value = await probe()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


@pytest_asyncio.fixture
async def dashboard(broker: MosquittoProcess) -> AsyncIterator[Dashboard]:
    token = generate_token()
    app = create_dashboard_app(MqttConfig(broker=broker.url), token)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    link: MqttLink = app.state.link
    try:
        async with asyncio.timeout(10):
            while not server.started:
                assert not task.done(), "the dashboard server stopped at start"
                await asyncio.sleep(0.02)
            await link.connected.wait()
        yield Dashboard(f"http://127.0.0.1:{port}", token, app)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


@pytest_asyncio.fixture
async def publisher(broker: MosquittoProcess) -> AsyncIterator[MqttLink]:
    link = MqttLink(MqttConfig(broker=broker.url), "test-publisher")
    await link.start()
    await asyncio.wait_for(link.connected.wait(), 5)
    try:
        yield link
    finally:
        await link.stop()
