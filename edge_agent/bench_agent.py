"""One benchmark edge agent, as its own process (it may run inside a network namespace).

``python -m edge_agent.bench_agent SPEC.json OUT.json``: SPEC holds the settings, the clip and the
duration; OUT receives the agent's report and its timeline (every frame sent, every result).
For the soak, SPEC may instead ask for a trace file (``trace``), no timeline (``timeline``:
false) and a schedule of frame widths (``resize``: ``{"widths": [...], "every_s": S}``) that
changes the stream's size on top of what its controller does.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from pathlib import Path
from typing import Any

from edge_agent.agent import EdgeAgent, EdgeOutputs
from edge_agent.sources import VideoSource, parse_source
from mobieye.config import Settings
from mobieye.runtime import setup_logging


async def _resize(source: VideoSource, widths: list[int], every_s: float) -> None:
    for i in itertools.count():
        source.max_width = widths[i % len(widths)]
        await asyncio.sleep(every_s)


async def run_agent(spec: dict[str, Any]) -> dict[str, Any]:
    settings = Settings.model_validate(spec["settings"])
    timeline = bool(spec.get("timeline", True))
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
        if resize
        else None
    )
    try:
        report = await agent.run(spec["duration"])
    finally:
        if resizer is not None:
            resizer.cancel()
    if not timeline:
        return {"report": report}
    return {
        "report": report,
        "frames": [[f.seq, f.index, round(f.capture_s, 6)] for f in agent.sent_frames],
        # Every frame the clip played, sent or not: what the viewer saw is scored on all of them.
        "source_frames": [[seq, index, round(t, 6)] for seq, index, t in source.timeline or []],
        "results": [
            [
                r.seq,
                round(r.arrival_s, 6),
                r.boxes.xyxy.round(4).tolist(),
                r.boxes.class_id.tolist(),
                r.boxes.confidence.round(3).tolist(),
            ]
            for r in agent.results
        ],
        "decisions": list(agent.controller.decisions) if agent.controller else [],
    }


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    setup_logging(spec["settings"].get("log_level", "WARNING"))
    out = asyncio.run(run_agent(spec))
    Path(argv[1]).write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
