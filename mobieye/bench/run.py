"""Run one pipeline mode: a worker process and N edge-agent processes, on loopback or across an
emulated link (edge and worker as separate hosts in network namespaces, unmodified)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml

from mobieye.bench.components import cpu_seconds
from mobieye.bench.outage import Outage
from mobieye.config import Settings
from mobieye.credentials import generate_token
from mobieye.errors import MobiEyeError
from mobieye.runtime import die_with_parent, free_port

WORKER_START_S = 240.0
HEALTH_PROBE = (
    "import sys, httpx\n"
    "try:\n"
    "    ok = httpx.get(sys.argv[1], timeout=1, trust_env=False).status_code == 200\n"
    "except httpx.HTTPError:\n"
    "    ok = False\n"
    "sys.exit(0 if ok else 1)\n"
)


class Topology(Protocol):
    """Where the worker and the edge agents run."""

    worker_host: str
    loopback: bool

    def cut_wire(self, down: bool) -> bool:
        """Take the link between them down (or back up); False where there is none."""
        ...

    def popen_worker(self, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]: ...

    def popen_edge(self, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]: ...


class Loopback:
    """Worker and edge on this host; with ``pin``, the worker on its cores and the load on the
    others (sched_setaffinity, as taskset does), so neither borrows the other's CPU."""

    worker_host = "127.0.0.1"
    loopback = True

    def cut_wire(self, down: bool) -> bool:
        return False  # one host: no wire

    def __init__(self, pin: tuple[set[int], set[int]] | None = None) -> None:
        self.pin = pin

    def popen_worker(self, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(argv, env=env, preexec_fn=self._start(0))

    def popen_edge(self, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(argv, env=env, preexec_fn=self._start(1))

    def _start(self, side: int) -> Callable[[], None]:
        cores = self.pin[side] if self.pin else None

        def start() -> None:
            die_with_parent()
            if cores:
                os.sched_setaffinity(0, cores)

        return start


def split_cores(worker_cores: int) -> tuple[set[int], set[int]]:
    """The first ``worker_cores`` of this process's cores for the worker, the rest for the
    load; MobiEyeError when that leaves the load none."""
    cores = sorted(os.sched_getaffinity(0))
    if not 1 <= worker_cores < len(cores):
        raise MobiEyeError(f"--pin-worker-cores {worker_cores}: this machine has {len(cores)} "
                           "core(s), and the load needs at least one of its own")  # fmt: skip
    return set(cores[:worker_cores]), set(cores[worker_cores:])


Load = Literal["agents", "replay"]


@dataclass
class ModeRun:
    mode: str
    duration_s: float
    worker_cpu_s: float
    agents: list[dict[str, Any]]  # each: report, frames, results, decisions
    load: Load = "agents"
    load_cpu_s: float | None = None  # the edge side's CPU, all streams together
    outage: tuple[float, float] | None = None  # monotonic: when the cloud went silent, came back


def bench_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MOBIEYE_")}


async def wait_healthy(topology: Topology, url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + WORKER_START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise MobiEyeError(f"the bench worker exited with code {proc.returncode}")
        # Probe from the edge's side: across a link the worker is only reachable from there.
        probe = topology.popen_edge(
            [sys.executable, "-c", HEALTH_PROBE, url + "/healthz"], bench_env()
        )
        if await asyncio.to_thread(probe.wait) == 0:
            return
        await asyncio.sleep(0.3)
    raise MobiEyeError(f"the bench worker did not become healthy in {WORKER_START_S:.0f} s")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    # SIGINT, not SIGTERM: a worker exits at once on it (on SIGTERM it would drain first,
    # waiting for streams a finished run no longer has a use for); an edge writes its report.
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def run_mode(
    settings: Settings,
    mode: str,
    topology: Topology,
    video: Path,
    duration_s: float,
    streams: int,
    workers: int = 1,
    load: Load = "agents",
    replay_codec: str = "vp8",
    outage: Outage | None = None,
) -> ModeRun:
    """``streams`` edge agents spread round-robin over ``workers`` worker processes: one
    process each (``agents``: capture, encode, send), or all in one process replaying the
    clip encoded once (``replay``)."""
    if not settings.worker.token:
        # Over an emulated link the workers listen beyond loopback, which wants a token.
        worker = settings.worker.model_copy(update={"token": generate_token()})
        settings = settings.model_copy(update={"worker": worker})
    # No worker (local-only): the edges are pointed at a port nothing listens on.
    ports = [free_port() if topology.loopback else 8000 + w for w in range(max(1, workers))]
    urls = [f"http://{topology.worker_host}:{port}" for port in ports]
    with tempfile.TemporaryDirectory(prefix=f"mobieye-bench-{mode}-") as tmp_name:
        tmp = Path(tmp_name)
        os.chmod(tmp, 0o755)
        procs: list[subprocess.Popen[bytes]] = []
        agents: list[subprocess.Popen[bytes]] = []
        silence: asyncio.Task[tuple[float, float]] | None = None
        try:
            for w, port in enumerate(ports[:workers]):
                cfg = settings.model_dump(mode="json", exclude={"edge"})
                cfg["worker"].update(
                    host=topology.worker_host, port=port, max_streams=max(8, streams),
                    id=f"bench-{w}",
                )  # fmt: skip
                cfg["webrtc"]["loopback_only"] = topology.loopback
                (tmp / f"worker{w}.yaml").write_text(yaml.safe_dump(cfg))
                env = {**bench_env(), "MOBIEYE_CONFIG": str(tmp / f"worker{w}.yaml")}
                procs.append(topology.popen_worker([sys.executable, "-m", "cloud_worker"], env))
            for proc, url in zip(procs, urls[:workers], strict=True):
                await wait_healthy(topology, url, proc)
            cpu_before = [cpu_seconds(p.pid) for p in procs]
            for i in range(streams):
                edge_cfg = settings.model_dump(mode="json")
                edge_cfg["edge"].update(worker_url=urls[i % len(urls)], stream_id=f"{mode}-{i}")
                edge_cfg["webrtc"]["loopback_only"] = topology.loopback
                if load == "replay":  # the codec the clip was encoded in is the one offered
                    edge_cfg["webrtc"]["codec"] = replay_codec
                replay = {"codec": replay_codec, "fps": edge_cfg["edge"]["fps"]}
                spec = {"settings": edge_cfg, "video": str(video), "duration": duration_s,
                        "replay": replay}  # fmt: skip
                (tmp / f"spec{i}.json").write_text(json.dumps(spec))
            files = [
                [str(tmp / f"spec{i}.json"), str(tmp / f"out{i}.json")] for i in range(streams)
            ]
            argv = [sys.executable, "-m", "edge_agent.bench_agent"]
            if load == "replay":
                agents.append(topology.popen_edge(
                    [*argv, "--replay", *(f for pair in files for f in pair)], bench_env()
                ))  # fmt: skip
            else:
                agents += [topology.popen_edge([*argv, *pair], bench_env()) for pair in files]
            # The load's own CPU: what the children reaped while waiting for it used.
            before = _children_cpu_s()
            silence = asyncio.create_task(_silence(topology, procs, outage)) if outage else None
            codes = [await asyncio.to_thread(a.wait) for a in agents]
            load_cpu_s = _children_cpu_s() - before
            window = await silence if silence is not None else None
            cpu_s = sum(cpu_seconds(p.pid) - b for p, b in zip(procs, cpu_before, strict=True))
        finally:
            if silence is not None:  # it must not freeze a worker after this
                silence.cancel()
            for proc in procs:  # a frozen worker can't be stopped
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)
            for a in agents:
                stop_process(a)
            for proc in procs:
                await asyncio.to_thread(stop_process, proc)
        if any(codes):
            raise MobiEyeError(f"{mode}: edge agents exited with {codes}")
        outs = [json.loads((tmp / f"out{i}.json").read_text()) for i in range(streams)]
    return ModeRun(mode, duration_s, cpu_s, outs, load, round(load_cpu_s, 2), window)


async def _silence(
    topology: Topology, procs: list[subprocess.Popen[bytes]], outage: Outage
) -> tuple[float, float]:
    """The outage (mobieye/bench/outage.py): over an emulated link the wire is cut; on
    loopback the workers are frozen. Returns its window."""
    await asyncio.sleep(outage.start_s)
    began = time.monotonic()
    cut = await asyncio.to_thread(topology.cut_wire, True)
    if not cut:
        for proc in procs:
            os.kill(proc.pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(outage.seconds)
    finally:
        if cut:
            await asyncio.to_thread(topology.cut_wire, False)
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
    return began, time.monotonic()


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def no_link(pin: tuple[set[int], set[int]] | None = None) -> AbstractContextManager[Loopback]:
    return nullcontext(Loopback(pin))
