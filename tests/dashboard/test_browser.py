"""The stream page in a real Chromium: a real worker and edge agent streaming the pedestrian clip
over a real Mosquitto; the page finds the worker, plays the live view with boxes, charts the
latency and sends a command the worker applies. Loopback only (see CHROMIUM_ARGS)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from mobieye.dashboard.auth import COOKIE, GRANT_COOKIE
from mobieye.mqtt.broker import MosquittoProcess
from tests.e2e.conftest import stop
from tests.e2e.test_fleet import start_edge, start_worker
from tests.realparts import skip_unless

from .conftest import Dashboard, eventually

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
# Nothing but 127.0.0.1: no QUIC, no background fetches, every other host unresolvable.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-features=WebRtcHideLocalIpsWithMdns", "--allow-loopback-in-peer-connection",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
]  # fmt: skip

pytestmark = [
    pytest.mark.slow,
    skip_unless("chromium"),
]


@pytest.mark.asyncio
async def test_stream_page_live_view_chart_and_control(
    broker: MosquittoProcess,
    dashboard: Dashboard,
    model_path: Path,
    pedestrian_clip: Path,
    tmp_path: Path,
) -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    worker, worker_url = await asyncio.to_thread(start_worker, model_path, broker.url, "w")
    edge: subprocess.Popen[bytes] | None = None
    try:
        edge = start_edge(pedestrian_clip, broker.url, tmp_path / "e.json", 60, worker_url)
        async with dashboard.client() as client:

            async def live() -> str | None:
                for s in (await client.get("/api/streams")).json():
                    if s["worker"] == "w" and s["latency_ms"] is not None:
                        return str(s["id"])
                return None

            sid: Any = await eventually(live, timeout_s=20, what="the live stream")
            async with playwright_api.async_playwright() as pw:
                # A fresh profile in tmp_path (Playwright passes it as --user-data-dir).
                context = await pw.chromium.launch_persistent_context(
                    tmp_path / "chromium-profile",
                    executable_path=CHROMIUM,
                    args=CHROMIUM_ARGS,
                    viewport={"width": 1100, "height": 1300},
                )
                try:
                    await _check_page(context, dashboard, client, sid)
                finally:
                    await context.close()
    finally:
        if edge is not None:
            stop(edge)
        stop(worker)


async def until(page: Any, expression: str, within_ms: int = 5000) -> None:
    """Poll ``expression`` in the page until truthy. (Playwright's wait_for_function evaluates
    strings with eval(), which the page's CSP rightly forbids; evaluate() goes over CDP.)"""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_ms / 1000
    while not await page.evaluate(expression):
        assert loop.time() < deadline, f"timed out after {within_ms} ms waiting for {expression}"
        await asyncio.sleep(0.1)


async def _check_page(
    context: Any, dashboard: Dashboard, client: httpx.AsyncClient, sid: str
) -> None:
    url = f"{dashboard.url}/streams/{sid}"
    page = await context.new_page()
    # No token (and no session cookie yet): refused.
    assert (await page.goto(url)).status == 401
    logs: list[str] = []
    page.on("console", lambda m: logs.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: logs.append(f"pageerror: {e}"))
    response = await page.goto(f"{url}?token={dashboard.token}")
    assert response.status == 200
    assert sid in await page.inner_text("h1")
    await until(page, "document.getElementById('fact-worker-url').textContent.startsWith('http')")
    assert (await page.inner_text("#fact-worker")).startswith("w")

    # The live view: WebRTC (video advancing, boxes drawn from the data channel) or MJPEG.
    await until(page, "window.mobieyeLivePath !== 'connecting'", 20_000)
    path = await page.evaluate("window.mobieyeLivePath")
    print(f"live view path: {path}; console: {logs}")
    if path == "webrtc":
        t0 = await page.evaluate("document.getElementById('video').currentTime")
        await asyncio.sleep(2)
        t1 = await page.evaluate("document.getElementById('video').currentTime")
        assert t1 > t0, (t0, t1)
        await until(page, "window.mobieyeBoxesDrawn > 0", 10_000)
        await until(page, "window.mobieyeLabelsDrawn.includes('person')", 10_000)
    else:
        assert path == "mjpeg", (path, logs)
        await until(page, "document.getElementById('mjpeg').naturalWidth > 0", 10_000)
    await until(page, "window.mobieyeChartPoints > 0", 10_000)
    # Every chart draws: latency, fps, uplink (measured by the worker), keyframe share, model;
    # the controller's first step (it picks a model) is in the timeline.
    charts = [
        "chart",
        "chart-fps",
        "chart-uplink",
        "chart-keyframes",
        "chart-box-age",
        "chart-model",
    ]
    await until(page, f"{charts}.every((c) => window.mobieyeCharts[c] > 0)", 10_000)
    await until(page, "document.querySelector('#timeline tr[data-kind=decision]')", 10_000)
    steps = await page.eval_on_selector_all(
        "#timeline tr[data-kind=decision]", "rows => rows.map((r) => r.textContent)"
    )
    assert any("model" in step for step in steps), steps

    # The control form: the model <select> lists the worker's models; the command (a model and
    # an SLA) is accepted (202) and the worker mirrors both.
    await until(page, "document.getElementById('control-model').options.length > 1")
    model = await page.evaluate("document.getElementById('control-model').options[1].value")
    workers = (await client.get("/api/workers")).json()
    assert model in next(w["models"] for w in workers if w["id"] == "w"), (model, workers)
    await page.select_option("#control-model", model)
    await page.fill("input[name=sla_ms]", "150")
    await page.click("#control button[type=submit]")
    await until(page, "document.getElementById('control-result').dataset.status === '202'")
    assert f'"model":"{model}"' in await page.inner_text("#control-result")

    async def mirrored() -> bool:
        s = (await client.get(f"/api/streams/{sid}")).json()
        return bool(s.get("sla_ms") == 150 and s.get("model") == model)

    await eventually(mirrored, timeout_s=10, what="the worker to mirror sla_ms 150 and the model")
    await until(page, "document.getElementById('fact-sla').textContent === '150'")
    # Out of range: refused, with the reason in the page; nothing is sent to the worker.
    await page.fill("input[name=sla_ms]", "5")
    await page.select_option("#control-model", "")
    await page.click("#control button[type=submit]")
    await until(page, "document.getElementById('control-result').dataset.status === '422'")
    refusal = await page.inner_text("#control-result")
    assert "sla_ms" in refusal and "greater than or equal to 10" in refusal, refusal
    # The operator's change is on the timeline too (and marked on the charts).
    await until(page, "document.querySelector('#timeline tr[data-kind=settings]')")
    assert "SLA 100 \u2192 150 ms" in await page.inner_text("#timeline tr[data-kind=settings]")
    await asyncio.sleep(2)  # a few more chart points after the change, for the picture
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard-stream.png"), full_page=True)

    # An unknown stream is a 404 page saying why, not a stack trace.
    missing = await page.goto(f"{dashboard.url}/streams/no-such-stream")
    assert missing.status == 404
    assert "unknown stream 'no-such-stream'" in await page.inner_text("body")

    # The MJPEG fallback (forced here; the session cookie now stands in for the token).
    await page.goto(f"{url}?live=mjpeg")
    await until(page, "window.mobieyeLivePath === 'mjpeg'")
    await until(page, "document.getElementById('mjpeg').naturalWidth > 0", 10_000)

    # The MJPEG fallback through the dashboard's proxy yields JPEG parts (boxes drawn there).
    async with client.stream("GET", f"/api/streams/{sid}/mjpeg", timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("multipart/x-mixed-replace")
        seen = b""
        async for chunk in r.aiter_bytes():
            seen += chunk
            if b"\xff\xd9" in seen:  # the end of a whole JPEG
                break
        assert b"Content-Type: image/jpeg" in seen and b"\xff\xd8" in seen


def write_y4m(clip: Path, out: Path, frames: int = 100) -> Path:
    """The clip's first ``frames`` as a raw I420 .y4m: Chromium's fake camera loops it."""
    import cv2

    cap = cv2.VideoCapture(str(clip))
    try:
        with out.open("wb") as f:
            for i in range(frames):
                ok, bgr = cap.read()
                assert ok, f"{clip}: only {i} frames"
                h, w = bgr.shape[:2]
                if i == 0:
                    f.write(f"YUV4MPEG2 W{w} H{h} F25:1 Ip A1:1 C420jpeg\n".encode())
                f.write(b"FRAME\n" + cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420).tobytes())
    finally:
        cap.release()
    return out


@pytest.mark.asyncio
async def test_phone_page_streams_the_camera_to_the_least_loaded_worker(
    broker: MosquittoProcess,
    dashboard: Dashboard,
    model_path: Path,
    pedestrian_clip: Path,
    tmp_path: Path,
) -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    camera = await asyncio.to_thread(write_y4m, pedestrian_clip, tmp_path / "camera.y4m")
    worker, _ = await asyncio.to_thread(start_worker, model_path, broker.url, "w-phone")
    try:
        async with dashboard.client() as client:

            async def worker_known() -> bool:
                workers = (await client.get("/api/workers")).json()
                return any(w["id"] == "w-phone" and w["url"] for w in workers)

            await eventually(worker_known, timeout_s=10, what="the worker's state")
            async with playwright_api.async_playwright() as pw:
                context = await pw.chromium.launch_persistent_context(
                    tmp_path / "chromium-profile",
                    executable_path=CHROMIUM,
                    args=[
                        *CHROMIUM_ARGS,
                        "--use-fake-device-for-media-stream",
                        "--use-fake-ui-for-media-stream",
                        f"--use-file-for-fake-video-capture={camera}",
                    ],
                )
                try:
                    page = await context.new_page()
                    logs: list[str] = []
                    page.on("console", lambda m: logs.append(f"{m.type}: {m.text}"))
                    # As a phone gets it: a one-stream grant from the dashboard's API, never
                    # the dashboard's token (nor a session made from it).
                    grant = (await client.post("/api/phone/grants")).json()
                    response = await page.goto(dashboard.url + grant["path"])
                    assert response.status == 200
                    cookies = {c["name"] for c in await context.cookies()}
                    assert GRANT_COOKIE in cookies and COOKIE not in cookies, cookies
                    await until(page, "window.mobieyePhoneResults > 10", 30_000)
                    # The page matched results to its frames by RTP timestamp (encoded transforms).
                    await until(page, "window.mobieyePhoneLatencies > 10", 10_000)
                    await until(page, "window.mobieyeLabelsDrawn.includes('person')", 10_000)
                    sid = await page.evaluate("window.mobieyePhoneStream")
                    status = await page.inner_text("#phone-status")
                    assert "w-phone" in status, (status, logs)
                    assert not [m for m in logs if m.startswith("error")], logs
                    ARTIFACTS.mkdir(exist_ok=True)
                    await page.screenshot(path=str(ARTIFACTS / "dashboard-phone.png"))

                    async def on_dashboard() -> Any:
                        r = await client.get(f"/api/streams/{sid}")
                        body = r.json() if r.status_code == 200 else {}
                        return body if body.get("latency_ms") else None

                    # Its latency reports reach the worker, hence the dashboard's chart.
                    s: Any = await eventually(on_dashboard, timeout_s=10, what="phone latency")
                    assert s["worker"] == "w-phone" and s["uplink_kbps"] > 0, s
                    assert 0 < s["latency_ms"]["p50"] <= s["latency_ms"]["p95"] < 5000, s
                    # The grant is spent: the same phone cannot open another stream with it.
                    again = await page.evaluate(
                        """fetch('/api/phone/offer', {method: 'POST',
                             headers: {'content-type': 'application/json'},
                             body: JSON.stringify({sdp: 'v=0', type: 'offer'})})
                           .then(r => r.status)"""
                    )
                    assert again == 401, again
                finally:
                    await context.close()
    finally:
        stop(worker)
