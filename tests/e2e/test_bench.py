"""`mobieye bench`: bad input is refused before anything runs; a short real run scores all modes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mobieye.bench.run import Loopback, split_cores
from tests.realparts import skip_unless

pytestmark = pytest.mark.slow


def bench(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mobieye.cli", "bench", *args],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@pytest.fixture(scope="module")
def campus(data_dir: Path) -> tuple[Path, Path]:
    return (
        data_dir / "videos" / "TUD-Campus.mp4",
        data_dir / "annotations" / "TUD-Campus" / "gt" / "gt.txt",
    )


def test_bad_input_fails_before_anything_runs(
    campus: tuple[Path, Path], data_dir: Path, tmp_path: Path
) -> None:
    video, _ = campus
    out = tmp_path / "b.json"
    cases = [
        (["--video", str(video), "--modes", "mobieye,turbo"], "unknown mode(s) turbo"),
        (["--video", str(tmp_path / "none.mp4")], "does not exist"),
        (
            ["--video", str(video), "--gt", str(data_dir / "annotations/TUD-Stadtmitte/gt/gt.txt")],
            "ground truth",
        ),
        (["--video", str(video), "--link", "moon"], "lte"),
        (["--video", str(video), "--out", str(tmp_path / "b.txt")], ".json"),
        (
            ["--video", str(video), "--pin-worker-cores", str(len(os.sched_getaffinity(0)))],
            "the load needs at least one of its own",
        ),
        (["--video", str(video), "--load", "ghosts"], "invalid choice: 'ghosts'"),
    ]
    for args, needle in cases:
        r = bench(*args, "--out", str(out)) if "--out" not in args else bench(*args)
        assert r.returncode == 2, (args, r.stderr[-2000:])
        assert needle in r.stderr, (needle, r.stderr[-2000:])
        assert not out.exists(), "never a half-written result"


def test_replay_load_is_scored_alike_and_costs_far_less_than_agents(
    campus: tuple[Path, Path], data_dir: Path, tmp_path: Path
) -> None:
    video, gt = campus
    model = data_dir / "models" / "yolox_nano_dynamic_ultralytics.onnx"
    figures = {}
    for load in ("agents", "replay"):
        out = tmp_path / f"{load}.json"
        r = bench(
            "--video", str(video), "--gt", str(gt), "--models", f"{model}@320", "--duration",
            "6", "--streams", "2", "--modes", "mobieye", "--load", load, "--fps", "30",
            "--out", str(out),
        )  # fmt: skip
        assert r.returncode == 0, r.stderr[-4000:]
        result = json.loads(out.read_text())
        assert result["load"] == load
        m = result["modes"]["mobieye"]
        assert m["load"] == load and m["load_cpu_s_per_stream_s"] > 0, m
        assert m["frames"] > 2 * 6 * 30 * 0.7, m  # both streams paced at 30 fps
        assert 0.3 < m["f1_vs_oracle"] <= 1.0 and m["f1_vs_gt"] is not None, m
        assert f"({load})" in out.with_suffix(".md").read_text()
        figures[load] = m["load_cpu_ms_per_frame"]
    # No capture, scaling or encoding per frame, one process start for all: cheaper per frame
    # sent (per second could mislead: an agent's controller sheds frames when starved).
    assert figures["replay"] < 0.7 * figures["agents"], figures


@skip_unless("root")
def test_link_without_root_is_refused_before_running(campus: tuple[Path, Path]) -> None:
    video, _ = campus
    r = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         sys.executable, "-m", "mobieye.cli", "bench", "--video", str(video), "--link", "lte",
         "--out", "/tmp/mobieye-never.json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr[-2000:]
    assert "root" in r.stderr
    assert not Path("/tmp/mobieye-never.json").exists()


def test_short_run_scores_every_mode(
    campus: tuple[Path, Path], data_dir: Path, tmp_path: Path
) -> None:
    video, gt = campus
    models = data_dir / "models"
    ladder = (
        f"{models / 'yolox_nano_dynamic_ultralytics.onnx'}@320,"
        f"{models / 'yolov5n_dynamic_ultralytics.onnx'}@640"
    )
    out = tmp_path / "b1.json"
    r = bench(
        "--video", str(video), "--gt", str(gt), "--models", ladder, "--duration", "5",
        "--out", str(out),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-4000:]
    result = json.loads(out.read_text())
    assert set(result["modes"]) == {"conventional", "fixed", "mobieye"}
    assert result["streams"] == 1 and result["link"] == "loopback" and result["machine"]
    for name, m in result["modes"].items():
        for key in ("f1_vs_oracle", "f1_vs_gt", "sla_miss_ratio", "detector_fraction",
                    "uplink_kbps", "worker_cpu_s_per_stream_s", "frames"):  # fmt: skip
            assert m[key] is not None, (name, key)
        assert set(m["latency_ms"]) >= {"p50", "p95", "p99"}
        assert 0.3 < m["f1_vs_oracle"] <= 1.0, (name, m["f1_vs_oracle"])
        assert m["frames"] > 80
        # Every frame the clip played is scored; sent ones are among them.
        assert m["frames_scored"] >= m["frames"], (name, m["frames_scored"], m["frames"])
    conv, fixed, ours = (result["modes"][k] for k in ("conventional", "fixed", "mobieye"))
    assert conv["detector_fraction"] > 0.5
    assert 0.08 < fixed["detector_fraction"] < 0.2  # every 8th frame
    assert ours["detector_fraction"] < conv["detector_fraction"]
    assert ours["worker_cpu_s_per_stream_s"] < conv["worker_cpu_s_per_stream_s"]
    for suffix in (".md", "_latency_cdf.png", "_f1_vs_uplink.png"):
        assert Path(str(out.with_suffix("")) + suffix).exists() or out.with_suffix(suffix).exists()


@skip_unless("root")
def test_emulated_lte_link_runs_edge_and_worker_as_two_hosts(
    campus: tuple[Path, Path], data_dir: Path, tmp_path: Path
) -> None:
    video, _ = campus
    model = data_dir / "models" / "yolox_nano_dynamic_ultralytics.onnx"
    out = tmp_path / "lte.json"
    r = bench(
        "--video", str(video), "--models", f"{model}@320", "--modes", "mobieye",
        "--link", "lte", "--sla", "250", "--duration", "6", "--out", str(out),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-4000:]
    m = json.loads(out.read_text())["modes"]["mobieye"]
    # ~70 ms of round trip crosses the wire: results can't come back faster than that.
    assert m["latency_ms"]["p50"] > 60, m["latency_ms"]
    assert m["frames"] > 100 and m["f1_vs_oracle"] > 0.5


def test_capacity_search_runs_the_counts_it_needs_and_reports_per_core(
    campus: tuple[Path, Path], data_dir: Path, tmp_path: Path
) -> None:
    video, gt = campus
    model = data_dir / "models" / "yolox_nano_dynamic_ultralytics.onnx"
    out = tmp_path / "cap.json"
    r = bench(
        "--video", str(video), "--gt", str(gt), "--models", f"{model}@320", "--duration", "4",
        "--modes", "mobieye", "--load", "replay", "--capacity", "--capacity-max", "2",
        "--out", str(out),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-4000:]
    result = json.loads(out.read_text())
    tried = [p["streams"] for p in result["sweep"]]
    n = result["capacity"]["mobieye"]
    # One stream first; two only if one held; the answer is what held.
    assert tried in ([1], [1, 2]) and (n == 0) == (tried == [1]) and n <= 2, (tried, n)
    cores = len(os.sched_getaffinity(0))
    assert result["capacity_per_worker_core"]["mobieye"] == round(n / cores, 2)
    md = out.with_suffix(".md").read_text()
    assert "Streams sustained" in md and "Per worker core (all shared)" in md


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to split")
def test_pinned_worker_and_load_run_on_their_own_cores() -> None:
    worker_cores, load_cores = split_cores(1)
    topology = Loopback((worker_cores, load_cores))
    show = [sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"]
    outs = []
    for side in (0, 1):  # the hook popen_worker (0) and popen_edge (1) start children with
        r = subprocess.run(show, capture_output=True, text=True, preexec_fn=topology._start(side))
        outs.append(r.stdout.strip())
    assert outs == [str(sorted(worker_cores)), str(sorted(load_cores))], outs
