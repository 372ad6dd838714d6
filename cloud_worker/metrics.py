"""Prometheus metrics of one worker, in a registry of its own (tests run several workers)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from cloud_worker.load import WorkerLoad

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)
FAST_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25)


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.frame_latency = Histogram(
            "mobieye_frame_latency_seconds",
            "Capture-to-result latency measured by the edge agent",
            ["stream"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.worker_frame = Histogram(
            "mobieye_worker_frame_seconds",
            "Decoded frame to result sent, on the worker",
            ["stream"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tracking = Histogram(
            "mobieye_tracking_seconds",
            "Per-frame tracking and bookkeeping time",
            ["stream"],
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "mobieye_detector_inference_seconds",
            "Detector inference time per keyframe",
            ["model"],
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.frames = Counter("mobieye_frames_received", "Frames decoded", ["stream"], registry=r)
        self.dropped = Counter(
            "mobieye_frames_dropped",
            "Frames replaced in the latest-frame slot before processing",
            ["stream"],
            registry=r,
        )
        self.decisions = Counter(
            "mobieye_keyframe_decisions",
            "Keyframe policy decisions by reason",
            ["stream", "reason"],
            registry=r,
        )
        self.bad_messages = Counter(
            "mobieye_bad_messages", "Refused data-channel messages", ["stream"], registry=r
        )
        self.controller = Counter(
            "mobieye_controller_decisions",
            "Changes the edge's controller made, by the model it chose",
            ["stream", "model"],
            registry=r,
        )
        self.stream_level = Gauge(
            "mobieye_stream_level",
            "Controller level of the stream (0: best)",
            ["stream"],
            registry=r,
        )
        self.stream_fps = Gauge(
            "mobieye_stream_target_fps", "Frame rate the controller set", ["stream"], registry=r
        )
        self.stream_bitrate = Gauge(
            "mobieye_stream_bitrate_cap_kbps", "Bitrate cap the controller set", ["stream"],
            registry=r,
        )  # fmt: skip
        self.streams = Gauge("mobieye_streams_active", "Streams being served", registry=r)
        self.box_age = Histogram(
            "mobieye_box_age_frames",
            "Frames between a result and the detection its boxes come from",
            ["stream"],
            buckets=(0, 1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.detector_restarts = Counter(
            "mobieye_detector_restarts",
            "Times the detector thread died (traceback logged) and was restarted",
            registry=r,
        )
        self.detector_failures = Counter(
            "mobieye_detector_failures", "Frames whose detection raised", registry=r
        )
        self.detections_abandoned = Counter(
            "mobieye_detections_abandoned",
            "Detections a stream gave up on past their deadline (and detected again)",
            ["stream"],
            registry=r,
        )
        self.detector_up = Gauge(
            "mobieye_detector_up",
            "1 while the worker can detect (the same judgement as /healthz), else 0",
            registry=r,
        )
        self.offers_refused = Counter(
            "mobieye_offers_refused", "Offers answered with an error", ["reason"], registry=r
        )
        self.asyncio_tasks = Gauge(
            "mobieye_asyncio_tasks",
            "Tasks on the worker's event loop (a leak grows it)",
            registry=r,
        )
        self.requests_refused = Counter(
            "mobieye_requests_refused",
            "Requests refused before any route ran (credentials, media type, size)",
            ["reason"],
            registry=r,
        )
        self.sessions_closed = Counter(
            "mobieye_sessions_closed",
            "Stream sessions closed, by why (ended, connect_timeout, first_frame_timeout, "
            "idle_timeout, oversized_frames, flood, peer_slow, peer_failed, shutdown)",
            ["reason"],
            registry=r,
        )
        self.frames_rejected = Counter(
            "mobieye_frames_rejected",
            "Decoded frames dropped before processing, by why (too_large)",
            ["reason"],
            registry=r,
        )

        self.capacity = Gauge(
            "mobieye_capacity_streams",
            "Streams this worker admits (measured at the SLA unless worker.max_streams is set)",
            registry=r,
        )
        self.frame_cpu = Gauge(
            "mobieye_frame_cpu_ms", "Measured process CPU per frame served, detection included",
            registry=r,
        )  # fmt: skip
        self.occupancy = Gauge(
            "mobieye_worker_occupancy",
            "Streams served over the streams this worker holds at the SLA (its measured "
            "capacity): the load an autoscaler should hold below 1",
            registry=r,
        )
        self.draining = Gauge(
            "mobieye_worker_draining", "1 while the worker drains (moving its streams away)",
            registry=r,
        )  # fmt: skip
        self.keyframe_stretch = Gauge(
            "mobieye_keyframe_stretch",
            "Factor the overload governor stretches every stream's keyframe spacing by (1: not)",
            registry=r,
        )

    def observe_load(self, load: WorkerLoad, streams: int, draining: bool) -> None:
        cap = load.capacity()
        admits = load.admits()
        self.capacity.set(0 if draining else admits)
        self.occupancy.set(round(streams / max(1, admits), 3))
        self.draining.set(1 if draining else 0)
        self.frame_cpu.set(cap.cpu_ms_per_frame)
        self.keyframe_stretch.set(load.stretch)

    def forget_stream(self, stream: str) -> None:
        """Drop a finished stream's label sets so cardinality stays bounded."""
        for metric in (
            self.frame_latency,
            self.worker_frame,
            self.tracking,
            self.frames,
            self.dropped,
            self.box_age,
            self.detections_abandoned,
            self.bad_messages,
            self.stream_level,
            self.stream_fps,
            self.stream_bitrate,
        ):
            with contextlib.suppress(KeyError):
                metric.remove(stream)
        for metric in (self.decisions, self.controller):
            for labels in list(metric._metrics):  # no public API to list label sets
                if labels[0] == stream:
                    metric.remove(*labels)
