"""Serving one stream's keyframe stills (the edge-first uplink): unpack, decode, detect, answer.

In ``uplink: keyframes`` the edge tracks every frame itself and sends only the frames it needs
detected, each as one binary data-channel message (mobieye/stills.py). Each still is answered:
a :class:`~mobieye.messages.Result` for its seq (boxes normalised to the still), or an
:class:`~mobieye.messages.ErrorMessage` saying why not (a bad still, the detector busy or late).

Bounded like the video path: at most one still being served and one waiting; a newer still
replaces the waiting one (drop-oldest: the edge's newest frame is the one worth detecting).
Decoding runs in the session's thread and detection in the detector pool: never on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Literal

from cloud_worker.detector_pool import DetectorPool, DetectOutput, PoolBusy
from cloud_worker.metrics import WorkerMetrics
from cloud_worker.stream_status import StreamStatus
from mobieye.errors import MessageError
from mobieye.messages import ErrorMessage, Result, Timings, encode
from mobieye.stills import Bgr, StillHeader, decode_still, unpack_still

log = logging.getLogger(__name__)

# How frames reach the worker: a WebRTC video track, or keyframe stills on the data channel.
Uplink = Literal["video", "keyframes"]
STILL_REASON = "still"  # what a still's result counts as among the stream's decisions


@dataclass(frozen=True, eq=False)
class _Still:
    header: StillHeader
    image: bytes
    received_s: float  # monotonic


class StillServer:
    """One stream's stills. ``put`` runs on the event loop and returns at once; the serving
    task answers through the session: ``deliver`` a result (its send path), ``refuse`` a bad
    still (counted and answered there), ``send`` any other answer (the guarded send)."""

    def __init__(
        self,
        stream_id: str,
        pool: DetectorPool,
        executor: Executor,
        status: StreamStatus,
        metrics: WorkerMetrics,
        *,
        max_bytes: int,
        max_pixels: int,
        model: Callable[[], str],
        deliver: Callable[[Result, str], None],
        refuse: Callable[[str], None],
        send: Callable[[str], None],
    ) -> None:
        self.stream_id = stream_id
        self.pool = pool
        self.executor = executor
        self.status = status
        self.metrics = metrics
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self._model = model  # the stream's current model (its processor's)
        self._deliver = deliver
        self._refuse = refuse
        self._send = send
        self._waiting: _Still | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.taken = 0  # well-formed stills queued for detection
        self.dropped = 0  # replaced by a newer still while waiting
        self.answered = 0  # got their Result (= detections run on this stream)
        self.unanswered = 0  # the detector was busy, late (abandoned) or failed
        self.abandoned = 0

    @property
    def detector_runs(self) -> int:
        return self.answered

    def put(self, raw: bytes) -> StillHeader | None:
        """Take one still message; its header, or None when it was refused as bad.

        Unpacked here (a header of at most 1 KB: cheap), so a bad still never displaces a
        waiting good one; the image is decoded later, off the loop."""
        if self._closed:
            return None
        try:
            header, image = unpack_still(raw, self.max_bytes)
        except MessageError as exc:
            self._refuse(f"still refused: {exc}")
            return None
        self.taken += 1
        self.status.on_frame(False)
        self.metrics.frames.labels(self.stream_id).inc()
        if self._waiting is not None:
            self.dropped += 1
            self.metrics.dropped.labels(self.stream_id).inc()
        self._waiting = _Still(header, image, time.monotonic())
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._serve())
        return header

    async def _serve(self) -> None:
        while self._waiting is not None and not self._closed:
            still, self._waiting = self._waiting, None
            try:
                await self._serve_one(still)
            except asyncio.CancelledError:
                raise
            except Exception:  # one still must not end the stream's serving
                log.exception("%s: serving still %d failed", self.stream_id, still.header.seq)

    async def _serve_one(self, still: _Still) -> None:
        seq = still.header.seq
        picked_s = time.monotonic()
        self.status.on_dequeued((picked_s - still.received_s) * 1000)
        image = await self._decode(still)
        if image is None:
            return
        label = self._label(still.header)
        try:
            future = self.pool.submit(image, label)
        except PoolBusy as exc:
            self._not_answered(seq, f"the detector is busy ({exc})")
            return
        deadline_s = self.pool.deadline_s(label)
        out = await self._wait(seq, future, deadline_s)
        if out is None:
            return
        self.answered += 1
        self._deliver(self._result(still, out, picked_s), STILL_REASON)

    async def _decode(self, still: _Still) -> Bgr | None:
        """The still as an image (in the session's thread), or None: refused as bad."""
        h = still.header
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self.executor, decode_still, h, still.image, self.max_pixels
            )
        except MessageError as exc:
            self._refuse(f"still {h.seq} refused: {exc}")
        except Exception as exc:  # OpenCV or PIL on input nobody foresaw: still the peer's
            log.warning("%s: still %d: decoding raised %r", self.stream_id, h.seq, exc)
            self._refuse(f"still {h.seq} refused: it does not decode ({type(exc).__name__})")
        return None

    def _label(self, header: StillHeader) -> str:
        """The edge controller's model when it is one of ours, else the stream's current one
        (a peer's name reaches neither the pool nor a metric label unless it is ours)."""
        if header.model is not None and header.model in self.pool.stats:
            return header.model
        return self._model()

    async def _wait(
        self, seq: int, future: Future[DetectOutput], deadline_s: float
    ) -> DetectOutput | None:
        """The detection, or None once the edge has been told why there is none."""
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), deadline_s)
        except TimeoutError:
            self.pool.cancel(future)
            self.abandoned += 1
            self.metrics.detections_abandoned.labels(self.stream_id).inc()
            self._not_answered(seq, f"no detection within {deadline_s:.1f} s (abandoned)")
        except asyncio.CancelledError:
            self.pool.cancel(future)  # the session is closing: out of the queue too
            raise
        except Exception as exc:  # the pool logged it; the stream goes on
            self._not_answered(seq, f"detection failed ({type(exc).__name__})")
        return None

    def _not_answered(self, seq: int, why: str) -> None:
        self.unanswered += 1
        # The edge keeps the boxes of the last still answered: their age makes this stream's
        # boxes stale in its stats when stills stop being answered.
        age = self.status.on_unanswered(seq)
        if age is not None:
            self.metrics.box_age.labels(self.stream_id).observe(age)
        log.info("%s: still %d not detected: %s", self.stream_id, seq, why)
        self._send(encode(ErrorMessage(message=f"still {seq} not detected: {why}")))

    def _result(self, still: _Still, out: DetectOutput, picked_s: float) -> Result:
        h = still.header
        boxes = out.detections.clip(h.width, h.height)
        return Result(
            seq=h.seq,
            pts=0,  # a still has no RTP time: its seq is its identity
            source="detect",
            detect_seq=h.seq,
            model=out.model,
            width=h.width,
            height=h.height,
            boxes=boxes.to_wire(h.width, h.height, self.pool.names(out.model)),
            timings=Timings(
                queue_ms=round((picked_s - still.received_s) * 1000, 2),
                detect_ms=round(out.inference_ms, 2),
                total_ms=round((time.monotonic() - still.received_s) * 1000, 2),
            ),
            detector_runs=self.detector_runs,
        )

    async def close(self) -> None:
        """Stop serving: the waiting still is dropped, the one in the detector cancelled."""
        self._closed = True
        self._waiting = None
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
