#!/usr/bin/env python3
"""Rolling restart under load: N edges stream a clip through two workers while the workers are
drained (SIGTERM) and restarted, one at a time, every PERIOD seconds; prints what the edges saw.

    python scripts/rolling_restart.py --edges 4 --minutes 3 --period 40 \
        --out docs/bench/rolling-restart.json

Real parts: an embedded Mosquitto on 127.0.0.1, worker and edge processes (the installed
`mobieye`), the shared model and clip. Run it inside a loopback-only network namespace
(`unshare -n sh -c 'ip link set lo up; exec python scripts/rolling_restart.py ...'`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from mobieye.mqtt.broker import MosquittoProcess
from mobieye.runtime import free_port

DATA = Path(os.environ.get("MOBIEYE_DATA_DIR", Path(__file__).resolve().parents[2] / "shared/data"))


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


class Worker:
    def __init__(self, wid: str, broker: str, model: Path, logs: Path) -> None:
        self.id, self.broker, self.model, self.logs = wid, broker, model, logs
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.starts += 1
        out = open(self.logs / f"{self.id}-{self.starts}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cloud_worker", "--id", self.id, "--port", str(self.port),
             "--broker", self.broker, "--model", str(self.model), "--imgsz", "320",
             "--max-streams", "8"],
            env={**os.environ, "MOBIEYE_MQTT__KEEPALIVE_S": "2", "MOBIEYE_LOG_LEVEL": "INFO"},
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        out.close()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"worker {self.id} did not become healthy")

    def streams(self) -> int:
        try:
            r = httpx.get(self.url + "/streams", timeout=2, trust_env=False)
            return len(r.json()["active"])
        except httpx.HTTPError:
            return 0

    def drain(self) -> float:
        """SIGTERM; seconds until it exited."""
        assert self.proc is not None
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(120)
        return time.monotonic() - t0


def start_edge(
    broker: str, clip: Path, run_s: float, report: Path, log_path: Path
) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "edge_agent", "--worker", "auto", "--broker", broker,
             "--source", str(clip), "--loop", "--duration", str(run_s),
             "--report", str(report), "--log-level", "WARNING"],
            stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--edges", type=int, default=4)
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--period", type=float, default=40.0, help="seconds between drains")
    ap.add_argument(
        "--model", type=Path, default=DATA / "models/yolox_nano_dynamic_ultralytics.onnx"
    )
    ap.add_argument("--clip", type=Path, default=DATA / "videos/TUD-Stadtmitte.mp4")
    ap.add_argument("--out", type=Path, help="write the summary as JSON here")
    args = ap.parse_args()
    run_s = args.minutes * 60
    work = Path(tempfile.mkdtemp(prefix="mobieye-rolling-"))
    log(f"logs and reports in {work}")
    broker = MosquittoProcess()
    broker.start()
    workers = [Worker(w, broker.url, args.model, work) for w in ("w-a", "w-b")]
    edges: list[subprocess.Popen[bytes]] = []
    drains: list[dict[str, Any]] = []
    try:
        for w in workers:
            w.start()
        log("workers ready; starting edges")
        reports = [work / f"edge{i}.json" for i in range(args.edges)]
        edges = [start_edge(broker.url, args.clip, run_s, r, work / f"edge{i}.log")
                 for i, r in enumerate(reports)]  # fmt: skip
        started = time.monotonic()
        turn = 0
        while time.monotonic() - started < run_s - args.period / 2:
            time.sleep(args.period)
            if time.monotonic() - started > run_s - 10:
                break
            w = workers[turn % 2]
            turn += 1
            had = w.streams()
            log(f"draining {w.id} ({had} streams)")
            took = w.drain()
            log(f"{w.id} exited after {took:.1f} s; restarting it")
            drains.append({"worker": w.id, "streams": had, "exit_s": round(took, 2)})
            w.start()
        codes = [e.wait(timeout=run_s + 120) for e in edges]
    finally:
        for e in edges:
            if e.poll() is None:
                e.kill()
        for w in workers:
            if w.proc is not None and w.proc.poll() is None:
                w.proc.send_signal(signal.SIGINT)
                w.proc.wait(30)
        broker.stop()
    results = [json.loads(r.read_text()) for r in reports]
    per_edge = [
        {
            "moves": r["moves"],
            "failovers": r["failovers"],
            "coverage": round(r["frames_with_result"] / max(1, r["frames_captured"]), 4),
            "bare_frames_after_first_boxes": r["bare_frames_after_first_boxes"],
            "max_result_gap_ms": r["max_result_gap_ms"],
            "latency_p95_ms": (r.get("latency_ms") or {}).get("p95"),
        }
        for r in results
    ]
    summary = {"edges": args.edges, "minutes": args.minutes, "period_s": args.period,
               "exit_codes": codes, "drains": drains, "per_edge": per_edge}  # fmt: skip
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    ok = all(c == 0 for c in codes) and all(
        e["failovers"] == 0 and e["bare_frames_after_first_boxes"] == 0 for e in per_edge
    )
    log("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
