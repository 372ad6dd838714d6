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

            async def controlled() -> dict[str, Any] | None:
                body = (await client.get(f"/api/streams/{sid}/series")).json()
                measured = [p for p in body["points"] if p["uplink_kbps"]]
                return body if measured and body["timeline"] else None

            # The worker measures the uplink; the edge's controller steps reach the timeline.
            body: Any = await eventually(controlled, timeout_s=10, what="uplink and decisions")
            assert all(p["fps"] >= 0 for p in body["points"])
            last = body["points"][-1]
            assert last["uplink_kbps"] > 20 and last["target_fps"] > 0 and last["bitrate_kbps"]
            assert last["level"] == 0 and last["worker"] == "w"
            first = body["timeline"][0]
            assert first["kind"] == "decision" and "model" in first["text"], first

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


@pytest.mark.asyncio
async def test_dashboard_follows_a_stream_through_a_failover(
    broker: MosquittoProcess,
    dashboard: Dashboard,
    model_path: Path,
    pedestrian_clip: Path,
    tmp_path: Path,
) -> None:
    ids = ("w-a", "w-b")
    started = await asyncio.gather(
        *(asyncio.to_thread(start_worker, model_path, broker.url, w) for w in ids)
    )
    workers = {wid: proc for wid, (proc, _url) in zip(ids, started, strict=True)}
    edge: subprocess.Popen[bytes] | None = None
    try:
        await asyncio.sleep(1.5)  # the workers' retained states reach the agent's directory
        edge = start_edge(pedestrian_clip, broker.url, tmp_path / "edge.json", duration=16)
        async with dashboard.client() as client:

            async def decided() -> dict[str, Any] | None:
                for s in (await client.get("/api/streams")).json():
                    body = (await client.get(f"/api/streams/{s['id']}/series")).json()
                    if body["timeline"]:
                        return dict(s)
                return None

            # Wait for the controller's first step, so there is a setting to carry over.
            stream: Any = await eventually(decided, timeout_s=15, what="a controller step")
            sid, first = stream["id"], stream["worker"]
            workers[first].kill()

            async def moved() -> dict[str, Any] | None:
                body = (await client.get(f"/api/streams/{sid}/series")).json()
                hops = [e for e in body["timeline"] if e["kind"] == "failover"]
                resumed = [e for e in body["timeline"] if "resumed" in e["text"]]
                return body if hops and resumed else None

            body: Any = await eventually(moved, timeout_s=15, what="the failover")
            (hop,) = [e for e in body["timeline"] if e["kind"] == "failover"]
            (other,) = set(ids) - {first}
            assert (hop["from_worker"], hop["worker"]) == (first, other), hop
            served_by = [p["worker"] for p in body["points"]]
            assert served_by[0] == first and served_by[-1] == other, served_by
            view = (await client.get(f"/api/streams/{sid}")).json()
            assert view["worker"] == other and view["failovers"] == 1, view
            # The new worker heard the controller's setting in force (it starts from defaults).
            (resumed,) = [e for e in body["timeline"] if "resumed" in e["text"]]
            assert resumed["kind"] == "decision" and other in resumed["text"]
            assert await asyncio.to_thread(edge.wait, 60) == 0
    finally:
        if edge is not None:
            stop(edge)
        for proc in workers.values():
            stop(proc)
