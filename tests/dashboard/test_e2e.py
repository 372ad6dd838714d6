"""End to end: a real worker process serving a real model, a real edge agent streaming a real
clip, a real Mosquitto between them and the dashboard; the dashboard shows the live stream."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mobieye.mqtt.broker import MosquittoProcess
from tests.e2e.conftest import stop
from tests.e2e.test_fleet import start_edge, start_worker

from .conftest import Dashboard, eventually

pytestmark = pytest.mark.slow


@pytest.mark.asyncio
async def test_dashboard_shows_a_live_stream_with_its_worker(
    broker: MosquittoProcess,
    dashboard: Dashboard,
    model_path: Path,
    pedestrian_clip: Path,
    tmp_path: Path,
) -> None:
    # Blocking start-up in a thread: the dashboard serves from this test's event loop.
    worker, worker_url = await asyncio.to_thread(start_worker, model_path, broker.url, "w")
    edge: subprocess.Popen[bytes] | None = None
    try:
        report = tmp_path / "edge.json"
        edge = start_edge(pedestrian_clip, broker.url, report, duration=8, worker=worker_url)
        async with dashboard.client() as client:

            async def live() -> dict[str, Any] | None:
                r = await client.get("/api/streams")
                assert r.status_code == 200, r.text
                for s in r.json():
                    if s["worker"] == "w" and s["fps"] and s["latency_ms"] is not None:
                        return dict(s)
                return None

            stream: Any = await eventually(live, timeout_s=10, what="the live stream")
            assert stream["worker"] == "w" and not stream["stale"]
            assert stream["fps"] > 0 and stream["latency_ms"]["p95"] >= stream["latency_ms"]["p50"]
            assert stream["model"] and stream["keyframe_interval"] >= 1
            assert 0 < stream["detector_fraction"] <= 1

            sid = stream["id"]
            workers = (await client.get("/api/workers")).json()
            assert any(w["id"] == "w" and w["status"] == "online" for w in workers), workers
            series = (await client.get(f"/api/streams/{sid}/series")).json()["points"]
            assert series and all(p["fps"] >= 0 for p in series)

            assert await asyncio.to_thread(edge.wait, 60) == 0
            assert json.loads(report.read_text())["stream_id"] == sid

            async def events() -> list[dict[str, Any]]:
                r = await client.get(f"/api/events?limit=500&stream={sid}")
                return list(r.json())

            seen: Any = await eventually(events, what="object events")
            assert "person" in {e["label"] for e in seen}

            async def ended() -> bool:
                return (await client.get(f"/api/streams/{sid}")).status_code == 404

            await eventually(ended, timeout_s=10, what="the ended stream to leave")
    finally:
        if edge is not None:
            stop(edge)
        stop(worker)
