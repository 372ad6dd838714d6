"""One benchmark edge agent, as its own process (it may run inside a network namespace).

``python -m mobieye.bench.agent SPEC.json OUT.json``: SPEC holds the settings, the clip and the
duration; OUT receives the agent's report and its timeline (every frame sent, every result).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from edge_agent.agent import EdgeAgent, EdgeOutputs
from edge_agent.sources import VideoSource, parse_source
from mobieye.config import Settings
from mobieye.runtime import setup_logging


async def run_agent(spec: dict[str, Any]) -> dict[str, Any]:
    settings = Settings.model_validate(spec["settings"])
    source = VideoSource(
        parse_source(spec["video"]),
        fps=settings.edge.fps,
        loop_file=True,
        max_width=None,
        keep_timeline=True,
    )
    agent = EdgeAgent(settings, source, EdgeOutputs(keep_timeline=True))
    report = await agent.run(spec["duration"])
    return {
        "report": report,
        "frames": [[f.seq, f.index, round(f.capture_s, 6)] for f in agent.sent_frames],
        # Every frame the clip played, sent or not: what the viewer saw is scored on all of them.
        "source_frames": [[seq, index, round(t, 6)] for seq, index, t in source.timeline or []],
        "results": [
            [
                r.seq,
                round(r.arrival_s, 6),
                r.xyxy.round(4).tolist(),
                r.class_id.tolist(),
                [] if r.score is None else r.score.round(3).tolist(),
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
