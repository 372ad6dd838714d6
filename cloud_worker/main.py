"""Run a worker: validate the model, patch WebRTC for low latency, serve HTTP."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from pathlib import Path
from types import FrameType

import cv2
import uvicorn

from cloud_worker.app import create_app
from cloud_worker.context import WorkerContext
from cloud_worker.drain import DrainOutcome
from mobieye.config import LadderModel, Settings
from mobieye.detector import Detector, UltralyticsDetector
from mobieye.errors import ConfigError
from mobieye.models.profile import ProfileCache
from mobieye.mqtt.preflight import check_broker, worker_account_problem
from mobieye.runtime import is_loopback_host
from mobieye.tls import TlsFiles, file_fingerprint, resolve_tls
from mobieye.webrtc import (
    confine_to_loopback,
    install_low_latency_jitter_buffer,
    install_receiver_absolute_timestamps,
    install_sender_zero_timestamp_origin,
)
from mobieye.webrtc.bounded import install_bounded_receive_queues
from mobieye.webrtc.sctp import set_sctp_rto_min
from mobieye.webrtc.turn import own_servers, usable_ice_servers

log = logging.getLogger(__name__)


def prepare_receiver_webrtc(settings: Settings) -> None:
    """Process-wide aiortc set-up for a receiving peer (worker, dashboard)."""
    if settings.webrtc.loopback_only:
        confine_to_loopback()
    install_bounded_receive_queues()
    install_receiver_absolute_timestamps()
    set_sctp_rto_min(settings.webrtc.sctp_rto_min_ms / 1000)
    if settings.webrtc.low_latency_receive:
        install_low_latency_jitter_buffer(capacity=settings.webrtc.jitter_capacity)


def build_detectors(settings: Settings) -> dict[str, tuple[Detector, float]]:
    """The worker's models: the ladder when one is configured, else detector.model alone.

    With ``detector.runtime: auto`` each model runs on the runtime ``mobieye models profile``
    chose for it on this machine (its cache), and its cached timing seeds the pool; a model
    without a profile here runs on onnxruntime, and the log says how to profile it."""
    d = settings.detector
    rungs = list(settings.ladder)
    if not rungs:
        if not d.model or not Path(d.model).expanduser().exists():
            detector = UltralyticsDetector(d)  # a stock name or a missing file: its own error
            return {f"{Path(detector.ref.spec).stem}@{d.imgsz}": (detector, 0.0)}
        rungs = [LadderModel(path=d.model, imgsz=d.imgsz, accuracy=0.0, sha256=d.sha256)]
    cache = ProfileCache()
    out: dict[str, tuple[Detector, float]] = {}
    for rung in rungs:
        cfg = settings.detector.model_copy(
            update={"model": rung.path, "imgsz": rung.imgsz, "sha256": rung.sha256}
        )
        profile = cache.chosen(rung, cfg.threads) if cfg.runtime == "auto" else None
        if profile is not None:
            cfg = cfg.model_copy(update={"runtime": profile.runtime})
            log.info("%s: serving on %s, profiled here at %.1f ms (F1 vs FP32 %.3f)",
                     rung.label, profile.runtime, profile.mean_ms,
                     profile.f1_vs_fp32)  # fmt: skip
        elif cfg.runtime == "auto":
            log.info("%s: no profile for this machine in %s: serving on onnxruntime (run "
                     "`mobieye models profile` once to measure the faster runtimes)",
                     rung.label, cache.path)  # fmt: skip
        detector = UltralyticsDetector(cfg)
        if profile is not None:
            detector.prior_ms = (profile.runtime, profile.mean_ms, profile.std_ms)
        out[rung.label] = (detector, rung.accuracy)
    return out


def check_exposure(settings: Settings) -> None:
    """A worker reachable from the network must want a credential."""
    w = settings.worker
    if not is_loopback_host(w.host) and not w.token:
        raise ConfigError(
            f"the worker would listen on {w.host}, beyond loopback, without a token: set "
            "worker.token (MOBIEYE_WORKER_TOKEN; e.g. `python -c 'import secrets; "
            "print(secrets.token_urlsafe(24))'`) and give the same to edges and the dashboard"
        )


def worker_tls(settings: Settings) -> TlsFiles | None:
    w = settings.worker
    cert = Path(w.tls_cert) if w.tls_cert else None
    key = Path(w.tls_key) if w.tls_key else None
    files = resolve_tls(w.host, w.tls, cert, key, role="worker")
    if files is not None:
        log.info("worker certificate %s, fingerprint %s (edges pin it with "
                 "fleet.worker_fingerprint)", files.cert, file_fingerprint(files.cert))  # fmt: skip
    elif not is_loopback_host(w.host):
        log.warning("the worker listens on %s over plain HTTP: its token and the SDP's DTLS "
                    "fingerprints cross the network in clear (set worker.tls)", w.host)  # fmt: skip
    return files


async def check_turn(settings: Settings) -> None:
    """Say at start whether the TURN relays work with this worker's secret (the worker serves
    anyway: direct paths may do, and a relay may come back)."""
    turn = settings.webrtc.turn
    if not turn.urls:
        return
    if not turn.secret:
        log.warning("webrtc.turn.urls without webrtc.turn.secret: this worker mints no TURN "
                    "credentials (edges must have the secret themselves)")  # fmt: skip
        return
    usable, problems = await usable_ice_servers(own_servers(settings.webrtc))
    relays = [s.urls[0] for s in usable if s.urls[0].startswith(("turn:", "turns:"))]
    if relays:
        log.info("TURN relays working: %s", ", ".join(relays))
    if problems and not relays:
        log.error("no TURN relay works for this worker: %s", "; ".join(problems))


def worker_id_for(settings: Settings) -> str:
    return settings.worker.id or f"{socket.gethostname()}-{settings.worker.port}"


async def serve_worker(settings: Settings) -> int:
    """Serve until stopped; returns the process exit code (1 when the model fails to load)."""
    check_exposure(settings)
    tls = worker_tls(settings)
    detectors = build_detectors(settings)  # raises ModelError before serving
    if settings.mqtt.broker:
        await check_broker(settings.mqtt)  # wrong credentials: a clear error, not a retry loop
        problem = worker_account_problem(settings.mqtt, worker_id_for(settings))
        if problem:  # a warning: a deployment may run its own ACL
            log.warning("%s", problem)
    await check_turn(settings)
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

    def on_drained(outcome: DrainOutcome) -> None:
        server.should_exit = True

    app = create_app(settings, detectors, worker_id_for(settings), on_load_failure, on_drained)
    config = uvicorn.Config(
        app,
        host=settings.worker.host,
        port=settings.worker.port,
        log_level="warning",
        ssl_certfile=str(tls.cert) if tls else None,
        ssl_keyfile=str(tls.key) if tls else None,
        # Long-lived responses (MJPEG viewers) must not hold the exit past this.
        timeout_graceful_shutdown=int(max(1, settings.worker.shutdown_timeout_s)),
    )
    server = DrainingServer(config, app.state.worker, asyncio.get_running_loop())
    log.info(
        "worker %s listening on %s://%s:%d (loading %s)",
        worker_id_for(settings),
        "https" if tls else "http",
        settings.worker.host,
        settings.worker.port,
        ", ".join(detectors),
    )
    await server.serve()
    return 1 if failed else 0


class DrainingServer(uvicorn.Server):
    """uvicorn, but the first SIGTERM drains (cloud_worker/drain.py) before the exit: the
    streams move to other workers instead of failing over. A second SIGTERM, or SIGINT
    (Ctrl-C), exits at once; so does SIGTERM with ``worker.drain_timeout_s`` 0."""

    def __init__(
        self, config: uvicorn.Config, state: WorkerContext, loop: asyncio.AbstractEventLoop
    ) -> None:
        super().__init__(config)
        self._state = state
        self._loop = loop

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        drains = (
            sig == signal.SIGTERM
            and not self.should_exit
            and not self._state.draining
            and self._state.settings.worker.drain_timeout_s > 0
        )
        if not drains:
            super().handle_exit(sig, frame)
            return
        # A signal handler runs between two bytecodes of the loop's thread: start the drain
        # from the loop itself. The exit code stays 0 (a drained worker stopped as asked).
        self._loop.call_soon_threadsafe(self._state.drain, "SIGTERM")


def run_worker(settings: Settings) -> int:
    return asyncio.run(serve_worker(settings))
