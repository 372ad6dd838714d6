"""The worker's HTTP face: WebRTC signalling, health and metrics.

The app loads the models (off the loop), runs the once-a-second stats and the fleet presence;
its routes are in cloud_worker/routes.py: ``POST /offer`` (``{"sdp", "type": "offer",
"stream_id"?, "frame_ticks"?, "uplink"?: "video" | "keyframes"}``, answered with the worker's
SDP; ``keyframes``: a data channel alone, carrying edge-first stills); ``/healthz``, 503 until the
detector is loaded and whenever it can't detect (its thread is gone, nothing completes while
detections wait, or they all fail); ``/metrics`` (Prometheus text). Watching a stream
(cloud_worker/viewers.py): ``POST /view`` (WebRTC, the same body with the stream's id),
``GET /streams/{id}/mjpeg`` (the fallback), ``GET /viewers``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from cloud_worker.context import WorkerContext
from cloud_worker.detector_pool import DetectorPool
from cloud_worker.drain import Drainer, DrainOutcome
from cloud_worker.guard import WorkerGuard
from cloud_worker.load import WorkerLoad
from cloud_worker.routes import router
from mobieye.capacity import CEILING
from mobieye.config import Settings
from mobieye.detector import Detector
from mobieye.errors import ModelError
from mobieye.fleet.presence import FleetPresence

log = logging.getLogger(__name__)

STATS_PERIOD_S = 1.0


def create_app(
    settings: Settings,
    detectors: dict[str, tuple[Detector, float]],
    worker_id: str,
    on_load_failure: Callable[[BaseException], None] | None = None,
    on_drained: Callable[[DrainOutcome], None] | None = None,
) -> FastAPI:
    """``on_drained``: called when a drain (SIGTERM, an MQTT drain command) has ended; the
    process exits then (cloud_worker.main)."""
    state = WorkerContext(settings, detectors, worker_id)

    def drain_started() -> None:
        if state.fleet is not None:
            state.fleet.publish_state()  # edges and the dashboard see "draining" at once

    state.drainer = Drainer(
        state.sessions,
        settings.worker.drain_timeout_s,
        on_start=drain_started,
        on_done=on_drained or (lambda outcome: None),
    )

    async def load() -> None:
        try:
            for detector, _ in detectors.values():
                await asyncio.to_thread(detector.load)
        except ModelError as exc:
            state.load_error = str(exc)
            log.error("%s", exc)
            if on_load_failure is not None:
                on_load_failure(exc)
            return
        m = state.metrics
        pool = DetectorPool(
            detectors,
            max_pending=settings.worker.max_streams or CEILING,
            max_batch=settings.worker.max_batch,
            min_deadline_s=settings.worker.detection_deadline_s,
            on_restart=m.detector_restarts.inc,
            on_failure=m.detector_failures.inc,
        )
        await asyncio.to_thread(pool.profile)
        # Models, ONNX Runtime and torch leave a few million long-lived objects: a full garbage
        # collection over them stalls every stream for ~200 ms. Freeze them out of the collector.
        gc.collect()
        gc.freeze()
        state.load = WorkerLoad(
            pool,
            interval=settings.keyframe.interval,
            detector_threads=settings.detector.threads,
            fixed_streams=settings.worker.max_streams,
        )
        cap = state.load.capacity()
        log.info(
            "worker %s admits %s streams (%s; %.1f CPU ms and %.1f detector ms per frame at "
            "%.0f fps on %g cores)", worker_id, state.admits(), state.load.basis,
            cap.cpu_ms_per_frame, cap.detector_ms_per_frame, cap.fps, cap.cores,
        )  # fmt: skip
        state.pool = pool
        log.info("worker %s ready: models %s", worker_id, ", ".join(detectors))

    async def publish_stats() -> None:
        problem: str | None = None
        while True:
            await asyncio.sleep(STATS_PERIOD_S)
            try:
                problem = tick(problem)
            except Exception:  # a bad period must not end the loop (nor the health signal)
                log.exception("worker %s: stats period failed", worker_id)

    def tick(problem: str | None) -> str | None:
        state.metrics.asyncio_tasks.set(len(asyncio.all_tasks()))
        for session in list(state.sessions.values()):
            session.send_stats(len(state.sessions))
            session.check_timeouts()
        if state.pool is None or state.load is None:
            return problem
        state.load.tick(state.sessions)
        state.metrics.observe_load(state.load, len(state.sessions), state.draining)
        # Say it once when the worker stops being able to detect, and once when it recovers.
        now = state.detector_problem()
        state.metrics.detector_up.set(0 if now else 1)
        if now and not problem:
            log.error("worker %s cannot detect: %s", worker_id, now)
        elif problem and not now:
            log.warning("worker %s detects again", worker_id)
        return now

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loader = asyncio.create_task(load())
        stats = asyncio.create_task(publish_stats())
        if settings.mqtt.broker:
            state.fleet = FleetPresence(settings, state)
            await state.fleet.start()
        yield
        if state.fleet is not None:
            await state.fleet.stop()
        stats.cancel()
        loader.cancel()
        sessions = [s.close("shutdown") for s in list(state.sessions.values())]
        await asyncio.gather(*sessions, return_exceptions=True)
        await state.viewers.close()
        if state.pool is not None:
            state.pool.shutdown()

    app = FastAPI(title="MobiEye worker", lifespan=lifespan)
    app.state.worker = state

    w = settings.worker
    refused = state.metrics.requests_refused
    app.add_middleware(
        WorkerGuard,
        token=w.token,
        metrics_token=w.metrics_token,
        max_body_bytes=w.max_body_bytes,
        on_refused=lambda reason: refused.labels(reason).inc(),
    )
    app.include_router(router)
    return app
