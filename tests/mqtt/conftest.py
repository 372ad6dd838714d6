"""Fixtures for the MQTT tests: a real Mosquitto of our own on a free 127.0.0.1 port.

The tests start their own broker because CI runs them in a loopback-only network namespace
where no system broker is visible.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest

from mobieye.mqtt.broker import MosquittoProcess
from tests.realparts import need


def _need_mosquitto() -> None:
    need("mosquitto")


@pytest.fixture
def mosquitto() -> Iterator[MosquittoProcess]:
    _need_mosquitto()
    broker = MosquittoProcess()
    broker.start()
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture
def mosquitto_auth() -> Iterator[MosquittoProcess]:
    _need_mosquitto()
    broker = MosquittoProcess(username="mobieye", password="s3cret")
    broker.start()
    try:
        yield broker
    finally:
        broker.close()


async def wait_until(
    predicate: Callable[[], object], timeout_s: float = 5.0, what: str = "condition"
) -> None:
    """Poll ``predicate()`` until true; fail the test after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.02)
