"""Benchmark edge agents, as their own process (it may run inside a network namespace).

``python -m edge_agent.bench_agent SPEC.json OUT.json``: SPEC holds the settings, the clip and the
duration; OUT receives the agent's report and its timeline (every frame sent, every result).
For the soak, SPEC may instead ask for a trace file (``trace``), no timeline (``timeline``:
false) and a schedule of frame widths (``resize``: ``{"widths": [...], "every_s": S}``) that
changes the stream's size on top of what its controller does.

``python -m edge_agent.bench_agent --replay SPEC.json OUT.json [SPEC.json OUT.json ...]``: one
process runs every spec's agent at once, each replaying the clip encoded once
(edge_agent/replay.py; ``replay``: ``{"codec": "vp8"|"h264", "fps": F}``): the load generator
whose own CPU per stream is small enough to measure a worker's capacity, not the machine's.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from pathlib import Path
from typing import Any

from edge_agent.agent import EdgeAgent, EdgeOutputs
from edge_agent.encoded_clip import EncodedClip, Encoding, load_or_encode
from edge_agent.replay import ReplaySource
from edge_agent.sources import VideoSource, parse_source
from mobieye.config import Settings
from mobieye.display import ArrivedResult
from mobieye.runtime import setup_logging


async def _resize(source: VideoSource, widths: list[int], every_s: float) -> None:
    for i in itertools.count():
        source.max_width = widths[i % len(widths)]
        await asyncio.sleep(every_s)


async def run_agent(spec: dict[str, Any], clip: EncodedClip | None = None) -> dict[str, Any]:
    """One agent; with ``clip``, replaying it instead of capturing and encoding the video."""
    settings = Settings.model_validate(spec["settings"])
    timeline = bool(spec.get("timeline", True))
    source: VideoSource | ReplaySource
    if clip is not None:
        fps = spec.get("replay", {}).get("fps") or settings.edge.fps
        source = ReplaySource(clip, Path(spec["video"]), fps=fps, keep_timeline=timeline)
    else:
        source = VideoSource(
            parse_source(spec["video"]),
            fps=settings.edge.fps,
            loop_file=True,
            max_width=None,
            keep_timeline=timeline,
        )
    trace = Path(spec["trace"]) if spec.get("trace") else None
    agent = EdgeAgent(settings, source, EdgeOutputs(trace=trace, keep_timeline=timeline))
    resize = spec.get("resize")
    resizer = (
        asyncio.create_task(_resize(source, list(resize["widths"]), float(resize["every_s"])))
        if resize and isinstance(source, VideoSource)
        else None
    )
    try:
        report = await agent.run(spec["duration"])
    finally:
        if resizer is not None:
            resizer.cancel()
    if not timeline:
        return {"report": report}

    def rows(results: list[ArrivedResult]) -> list[list[Any]]:
        return [
            [r.seq, round(r.arrival_s, 6), r.boxes.xyxy.round(4).tolist(),
             r.boxes.class_id.tolist(), r.boxes.confidence.round(3).tolist(),
             r.boxes.tracker_id.tolist()]
            for r in results
        ]  # fmt: skip

    return {
        "report": report,
        "frames": [[f.seq, f.index, round(f.capture_s, 6)] for f in agent.sent_frames],
        # Every frame the clip played, sent or not: what the viewer saw is scored on all of them.
        "source_frames": [[seq, index, round(t, 6)] for seq, index, t in source.timeline or []],
        "results": rows(agent.results),
        "local_results": rows(agent.local_results),
        "decisions": list(agent.controller.decisions) if agent.controller else [],
    }


async def run_replay(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every spec's agent at once in this process, all replaying one encoded clip."""
    first = specs[0]
    replay = first.get("replay", {})
    width = Settings.model_validate(first["settings"]).edge.max_width or 640
    how = Encoding(codec=replay.get("codec", "vp8"), width=width)
    clip = await asyncio.to_thread(load_or_encode, Path(first["video"]), how)
    return list(await asyncio.gather(*(run_agent(spec, clip) for spec in specs)))


def main(argv: list[str]) -> int:
    replay = argv[:1] == ["--replay"]
    args = argv[1:] if replay else argv
    if not args or len(args) % 2 or (len(args) > 2 and not replay):
        print(__doc__, file=sys.stderr)
        return 64
    pairs = [(Path(args[i]), Path(args[i + 1])) for i in range(0, len(args), 2)]
    specs = [json.loads(spec.read_text()) for spec, _ in pairs]
    setup_logging(specs[0]["settings"].get("log_level", "WARNING"))
    outs = asyncio.run(run_replay(specs)) if replay else [asyncio.run(run_agent(specs[0]))]
    for (_, out_path), out in zip(pairs, outs, strict=True):
        out_path.write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
