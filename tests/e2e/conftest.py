"""A real worker process serving a real model, for the end-to-end tests."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from mobieye.mqtt.broker import MosquittoProcess
from mobieye.runtime import free_port


def start_worker(model: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloud_worker", "--port", str(port), "--model", str(model), *extra],
        env={**os.environ, "MOBIEYE_LOG_LEVEL": "INFO"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode}")
        try:
            if httpx.get(url + "/healthz", timeout=1, trust_env=False).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("worker did not become healthy")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def broker() -> Iterator[MosquittoProcess]:
    """A real Mosquitto on a free 127.0.0.1 port, for one test."""
    mosquitto = MosquittoProcess()
    mosquitto.start()
    yield mosquitto
    mosquitto.stop()


@pytest.fixture(scope="module")
def worker_url(model_path: Path) -> Iterator[str]:
    proc, url = start_worker(model_path)
    yield url
    stop(proc)


@asynccontextmanager
async def serving(app: Any, port: int) -> AsyncIterator[str]:
    """Serve a worker app in this process on 127.0.0.1:``port`` until healthy; yields its URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(trust_env=False) as client:
        for _ in range(600):
            try:
                if (await client.get(url + "/healthz")).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    try:
        yield url
    finally:
        server.should_exit = True
        await task
