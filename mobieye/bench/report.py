"""The benchmark's table and plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Machine: {result['machine']}  ",
        f"Date: {result['date']}; clip {Path(result['video']).name}; {result['streams']} "
        f"stream(s), load {result.get('load', 'agents')}; link {result['link']}; "
        f"SLA {result['sla_ms']:.0f} ms; "
        f"{result['duration_s']:.0f} s per mode; oracle {result['oracle']}",
        "",
        "| mode | F1 vs oracle | F1 vs GT | latency p50 / p95 / p99 ms | over SLA | "
        "detector runs/frame | uplink kbps/stream | worker CPU s per stream-s | load CPU s "
        "per stream-s, ms per frame | frames sent / scored |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in result["modes"].items():
        lat = m["latency_ms"]
        gt = f"{m['f1_vs_gt']:.3f}" if m["f1_vs_gt"] is not None else "—"
        lines.append(
            f"| {name} | {m['f1_vs_oracle']:.3f} | {gt} | {lat['p50']} / {lat['p95']} / "
            f"{lat['p99']} | {m['sla_miss_ratio']:.1%} | {m['detector_fraction']} | "
            f"{m['uplink_kbps']} | {m['worker_cpu_s_per_stream_s']} | "
            f"{m.get('load_cpu_s_per_stream_s')}, {m.get('load_cpu_ms_per_frame')} "
            f"({m.get('load', 'agents')}) | {m['frames']} / "
            f"{m.get('frames_scored', m['frames'])} |"
        )
    lines += _edge_table(result)
    lines += _stills_table(result)
    return "\n".join(lines) + "\n"


def _stills_table(result: dict[str, Any]) -> list[str]:
    """Edge-first modes: the stills they sent."""
    rows = [(n, m["stills"]) for n, m in result["modes"].items() if m.get("stills")]
    if not rows:
        return []
    lines = [
        "",
        "| mode | stills/s | bytes per still | keyframe round trip p95 ms | quality at the end "
        "| why stills went (or not) |",
        "|---|---|---|---|---|---|",
    ]
    for name, st in rows:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(st["reasons"].items(),
                                                          key=lambda kv: -kv[1]))  # fmt: skip
        lines.append(
            f"| {name} | {st['per_s']} | {st['bytes_mean']} | {st['keyframe_latency_p95_ms']} | "
            f"{st['quality_last']} | {reasons} |"
        )
    return lines


def _edge_table(result: dict[str, Any]) -> list[str]:
    """Where the shown boxes came from, the outage window and the edge's CPU, per mode."""
    modes = result["modes"]
    if not any("boxes_from" in m for m in modes.values()):
        return []  # a result saved before these figures existed
    lines = [
        "",
        "| mode | boxes from cloud / on-device / tracker / none | frames without boxes | "
        "outage: F1 vs oracle, frames without boxes | edge CPU ms/frame | MOTA / IDF1 / "
        "ID switches / HOTA |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in modes.items():
        came = m.get("boxes_from") or {}
        src = " / ".join(str(came.get(k, 0)) for k in ("cloud", "local", "tracker", "none"))
        out = m.get("outage")
        outage = "—" if not out else f"{out['f1_vs_oracle']}, {out['frames_without_boxes']}"
        mot = " / ".join(str(m.get(k)) for k in ("mota", "idf1", "id_switches", "hota"))
        lines.append(
            f"| {name} | {src} | {m.get('frames_without_boxes')} | {outage} | "
            f"{m.get('edge_cpu_ms_per_frame')} | {mot} |"
        )
    return lines


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_latency_cdf(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, m in result["modes"].items():
        values = np.sort(np.asarray(m["latencies_ms"]))
        if len(values):
            ax.plot(values, np.arange(1, len(values) + 1) / len(values), label=name)
    ax.axvline(result["sla_ms"], color="grey", linestyle="--", label="SLA")
    ax.set_xlabel("capture-to-result latency (ms)")
    ax.set_ylabel("fraction of frames")
    ax.set_xscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title(f"{result['streams']} stream(s), link {result['link']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_f1_vs_uplink(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, m in result["modes"].items():
        if m["uplink_kbps"] is None:
            continue
        ax.scatter([m["uplink_kbps"]], [m["f1_vs_oracle"]], s=60)
        ax.annotate(name, (m["uplink_kbps"], m["f1_vs_oracle"]), textcoords="offset points",
                    xytext=(6, 4))  # fmt: skip
    ax.set_xlabel("uplink per stream (kbps)")
    ax.set_ylabel("F1 vs oracle (IoU 0.5)")
    ax.set_ylim(0, 1.02)
    ax.grid(True, alpha=0.3)
    ax.set_title(f"accuracy vs bandwidth, link {result['link']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
