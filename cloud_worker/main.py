"""Run a worker: validate the model, patch WebRTC for low latency, serve HTTP."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import cv2
import uvicorn

from cloud_worker.app import create_app
from mobieye.config import Settings
from mobieye.detector import Detector, UltralyticsDetector
from mobieye.mqtt.preflight import check_broker
from mobieye.webrtc import (
    confine_to_loopback,
    install_low_latency_jitter_buffer,
    install_receiver_absolute_timestamps,
    install_sender_zero_timestamp_origin,
)

log = logging.getLogger(__name__)


def prepare_receiver_webrtc(settings: Settings) -> None:
    """Process-wide aiortc set-up for a receiving peer (worker, dashboard)."""
    if settings.webrtc.loopback_only:
        confine_to_loopback()
    install_receiver_absolute_timestamps()
    if settings.webrtc.low_latency_receive:
        install_low_latency_jitter_buffer(capacity=settings.webrtc.jitter_capacity)


def build_detectors(settings: Settings) -> dict[str, tuple[Detector, float]]:
    """The worker's models: the ladder when one is configured, else detector.model alone."""
    if not settings.ladder:
        detector = UltralyticsDetector(settings.detector)
        label = f"{Path(detector.ref.spec).stem}@{settings.detector.imgsz}"
        return {label: (detector, 0.0)}
    out: dict[str, tuple[Detector, float]] = {}
    for rung in settings.ladder:
        cfg = settings.detector.model_copy(update={"model": rung.path, "imgsz": rung.imgsz})
        out[rung.label] = (UltralyticsDetector(cfg), rung.accuracy)
    return out


def worker_id_for(settings: Settings) -> str:
    return settings.worker.id or f"{socket.gethostname()}-{settings.worker.port}"


async def serve_worker(settings: Settings) -> int:
    """Serve until stopped; returns the process exit code (1 when the model fails to load)."""
    detectors = build_detectors(settings)  # raises ModelError before serving
    if settings.mqtt.broker:
        await check_broker(settings.mqtt)  # wrong credentials: a clear error, not a retry loop
    # Each stream tracks in its own thread; OpenCV's own pool on top only adds overhead.
    cv2.setNumThreads(settings.worker.cv_threads)
    prepare_receiver_webrtc(settings)
    # The worker sends video only to viewers (cloud_worker/viewers.py): with a zero origin their
    # RTP timestamp is the edge's pts, which a browser reads back (requestVideoFrameCallback's
    # rtpTimestamp) to put each result on its own frame.
    install_sender_zero_timestamp_origin()
    failed: list[BaseException] = []

    def on_load_failure(exc: BaseException) -> None:
        failed.append(exc)
        server.should_exit = True

    app = create_app(settings, detectors, worker_id_for(settings), on_load_failure)
    config = uvicorn.Config(
        app, host=settings.worker.host, port=settings.worker.port, log_level="warning"
    )
    server = uvicorn.Server(config)
    log.info(
        "worker %s listening on http://%s:%d (loading %s)",
        worker_id_for(settings),
        settings.worker.host,
        settings.worker.port,
        ", ".join(detectors),
    )
    await server.serve()
    return 1 if failed else 0


def run_worker(settings: Settings) -> int:
    return asyncio.run(serve_worker(settings))
