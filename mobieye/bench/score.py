"""Score a mode's run: what every frame showed against the oracle and the ground truth, its
latency, misses of the SLA, detector use, uplink and worker CPU."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from mobieye.accuracy import F1Score, match_counts
from mobieye.bench.mot import mot_metrics
from mobieye.bench.oracle import PERSON
from mobieye.bench.run import ModeRun
from mobieye.detections import Detections
from mobieye.display import ArrivedResult, display_timeline
from mobieye.stats import percentiles

LAP_ID_STRIDE = 1_000_000  # ground-truth ids of each pass of a looped clip apart


def _arrived(row: list[Any]) -> ArrivedResult:
    """A saved result row: seq, arrival, boxes, classes, scores[, track ids (newer runs)]."""
    seq, arrival, xyxy, cls, score = row[:5]
    ids = np.asarray(row[5] if len(row) > 5 else [], np.int64)
    return ArrivedResult(seq, arrival, Detections(xyxy, score, cls, ids))


def _mean_mot(per_stream: list[dict[str, float | int]]) -> dict[str, float | None]:
    keys = ("mota", "idf1", "id_switches", "hota")
    if not per_stream:
        return dict.fromkeys(keys)
    return {k: round(float(np.mean([m[k] for m in per_stream])), 4) for k in keys}


def _stills(per_stream: list[dict[str, Any]], duration_s: float) -> dict[str, Any]:
    sizes = [s["bytes_mean"] for s in per_stream if s.get("bytes_mean")]
    p95 = [s["keyframe_latency_ms"]["p95"] for s in per_stream
           if (s.get("keyframe_latency_ms") or {}).get("p95") is not None]  # fmt: skip
    return {
        "per_s": round(float(np.mean([s["sent"] for s in per_stream])) / duration_s, 2),
        "bytes_mean": round(float(np.mean(sizes))) if sizes else None,
        "keyframe_latency_p95_ms": round(float(np.mean(p95)), 1) if p95 else None,
        "quality_last": [s.get("quality") for s in per_stream],
        "reasons": dict(sum((Counter(s.get("reasons") or {}) for s in per_stream), Counter())),
    }


def score_mode(
    run: ModeRun,
    oracle: list[Detections],
    gt: list[Detections] | None,
    sla_ms: float,
    min_score: float,
) -> dict[str, Any]:
    """Accuracy is scored on every frame the clip played (``source_frames``): a frame the
    controller decimated, or the edge's latest-frame slot replaced before it was sent, still
    showed something (the newest boxes). Latency and SLA misses are over the frames sent.

    Boxes below ``min_score`` count on neither side: near the detector's threshold, boxes
    flicker with compression noise alone, which no pipeline can be scored against."""
    oracle = [f.confident(min_score) for f in oracle]
    vs_oracle, vs_gt = F1Score(), F1Score()
    latencies: list[float] = []
    frames = scored = in_time = fallback = runs = sent = 0
    uplink: list[float] = []
    edge_cpu: list[float] = []
    mot: list[dict[str, float | int]] = []  # per stream
    came: Counter[str] = Counter()
    stills: list[dict[str, Any]] = []  # edge-first: each stream's stills summary
    # Over the outage window alone (--outage), and frames left without boxes once any came.
    in_outage, outage_frames, outage_bare, bare = F1Score(), 0, 0, 0
    window = run.outage
    for agent in run.agents:
        sent_frames = agent["frames"]  # [seq, index, capture_s]
        results = [_arrived(row) for row in agent["results"]]
        # The on-device model's results are shown like the cloud's (a frame shows its own if
        # it came in time, else the newest), listed first so a cloud result for the same
        # frame wins; latency is the cloud's alone.
        local = [_arrived(row) for row in agent.get("local_results", [])]
        capture = {seq: t for seq, _, t in sent_frames}
        for r in results:
            ms = (r.arrival_s - capture[r.seq]) * 1000
            latencies.append(ms)
            in_time += ms <= sla_ms
        played = agent.get("source_frames") or sent_frames  # older runs: sent frames only
        shown = display_timeline([(s, t) for s, _, t in played], local + results, sla_ms)
        scored += len(played)
        seen_any = False
        tracks: list[tuple[Detections, Detections]] = []  # (truth, shown people), for MOT
        laps, last_index = 0, -1
        for (_, index, capture_s), d in zip(played, shown, strict=True):
            boxes = Detections.empty() if d.result is None else d.result.boxes
            shown_boxes = boxes.confident(min_score)
            xyxy, cls = shown_boxes.xyxy, shown_boxes.class_id
            ref = oracle[index % len(oracle)]
            counts = match_counts(xyxy, cls, ref.xyxy, ref.class_id)
            vs_oracle.add(counts)
            seen_any = seen_any or d.result is not None
            bare += seen_any and d.result is None
            if window is not None and window[0] <= capture_s < window[1]:
                in_outage.add(counts)
                outage_frames += 1
                outage_bare += d.result is None
            if gt is not None:
                truth = gt[index % len(gt)]
                people = cls == PERSON
                vs_gt.add(match_counts(xyxy[people], cls[people], truth.xyxy, truth.class_id))
                # A looped clip shows its people again from the start: new identities each
                # pass (else every jump back would count as an identity switch).
                laps += index < last_index
                last_index = index
                lap_truth = truth.copy()
                lap_truth.tracker_id = truth.tracker_id + laps * LAP_ID_STRIDE
                tracks.append((lap_truth, shown_boxes[people]))
            fallback += d.shown == "fallback"
        if tracks:
            mot.append(mot_metrics(tracks))
        frames += len(sent_frames)
        report = agent["report"]
        runs += report["detector_runs"]
        # Edge-first sends stills, not frames: per frame means per frame it showed.
        sent += len(sent_frames) if report.get("stills") else report["frames_sent"]
        if report["uplink_kbps"]:
            uplink.append(report["uplink_kbps"])
        if report.get("edge_cpu_ms_per_frame") is not None:
            edge_cpu.append(report["edge_cpu_ms_per_frame"])
        came.update(report.get("boxes_from") or {})
        if report.get("stills"):
            stills.append(report["stills"])
    lat = percentiles(latencies)
    streams = len(run.agents)
    return {
        "frames": frames,
        "frames_scored": scored,
        "f1_vs_oracle": round(vs_oracle.f1, 4),
        "f1_vs_gt": round(vs_gt.f1, 4) if gt is not None else None,
        "precision_vs_oracle": round(vs_oracle.precision, 4),
        "recall_vs_oracle": round(vs_oracle.recall, 4),
        "latency_ms": {k: lat[k] for k in ("p50", "p95", "p99")},
        "sla_ms": sla_ms,
        "min_score": min_score,
        "sla_miss_ratio": round(1 - in_time / frames, 4) if frames else None,
        "fallback_frames": fallback,
        # Tracking quality against the ground truth (TrackEval), the mean over streams.
        **_mean_mot(mot),
        "frames_without_boxes": bare,  # after the stream's first boxes, frames shown with none
        "outage": None
        if window is None
        else {
            "seconds": round(window[1] - window[0], 2),
            "frames": outage_frames,
            "f1_vs_oracle": round(in_outage.f1, 4) if outage_frames else None,
            "frames_without_boxes": outage_bare,
        },
        # The edge's own count: where each sent frame's boxes came from (cloud in time, the
        # on-device model, the tracker from a cloud result, none).
        "boxes_from": dict(came),
        # The edge process's CPU per captured frame (with --load replay, every stream's share
        # of the one replay process).
        "edge_cpu_ms_per_frame": round(float(np.mean(edge_cpu)), 3) if edge_cpu else None,
        "detector_fraction": round(runs / sent, 4) if sent else None,
        # Edge-first: the stills the edge sent (size, rate, round trip to the cloud's answer).
        "stills": _stills(stills, run.duration_s) if stills else None,
        "uplink_kbps": round(float(np.mean(uplink)), 1) if uplink else None,
        "worker_cpu_s_per_stream_s": round(run.worker_cpu_s / (streams * run.duration_s), 4),
        "load": run.load,
        "load_cpu_s_per_stream_s": round(run.load_cpu_s / (streams * run.duration_s), 4)
        if run.load_cpu_s is not None
        else None,
        # Per frame too: an agents load whose controllers shed frames costs less per second.
        "load_cpu_ms_per_frame": round(run.load_cpu_s * 1000 / sent, 3)
        if run.load_cpu_s is not None and sent
        else None,
        "streams": streams,
        "latencies_ms": [round(v, 2) for v in latencies],
        "controller_decisions": [
            d for a in run.agents for d in a["decisions"] if d["reason"] != "hold"
        ],
    }
