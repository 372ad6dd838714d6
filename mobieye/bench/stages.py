"""The worker's per-frame CPU by stage, from a py-spy profile of it (``python -m
mobieye.bench.stages PROFILE.raw``; the README shows how the profile is taken).

py-spy samples every thread of the worker at a fixed rate and, by default, keeps only threads
that are running (idle ones, and those waiting on the GIL, sleep and are left out), so a
stage's share of the samples is its share of the worker's CPU. Each sampled stack is put in
the first stage whose rule matches any of its frames, in the order below: a stack inside the
decoder thread is decode even though aiortc's receiver started it, SRTP is SRTP although the
DTLS transport called it. Pure: tested on hand-written stacks.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

IDLE = "idle"
# (stage, pattern, scope), first match wins: "any" frame of the stack, or only its "leaf" (the
# innermost Python frame: where the time went when no library frame below says otherwise).
RULES: tuple[tuple[str, str, str], ...] = (
    # A thread blocked waiting that py-spy still sampled as running (it can't always tell):
    # not CPU, left out of the shares.
    (
        IDLE,
        r"Condition\.wait|Event\.wait|Queue\.get|EpollSelector\.select|"
        r"_worker \(concurrent/futures/thread\.py",
        "leaf",
    ),
    ("detector: compile", r"compile_model|read_model", "any"),
    (
        "detector: inference",
        r"InferRequest\.infer|CompiledModel\.__call__|InferenceSession\.run",
        "any",
    ),
    (
        "detector: pre/post-processing",
        r"ultralytics/|mobieye/detector\.py|detector_pool\.py",
        "any",
    ),
    ("decode (VP8/H264)", r"decoder_worker|aiortc/codecs/", "any"),
    ("tracking (optical flow)", r"mobieye/tracking/", "any"),
    ("keyframe policy, thumbnail", r"keyframe_policy\.py", "any"),
    ("luma / colour conversion", r"cloud_worker/frames\.py", "any"),
    (
        "result message (pydantic, JSON)",
        r"mobieye/messages\.py|pydantic|detections\.py|json/",
        "any",
    ),
    ("metrics", r"prometheus_client|cloud_worker/metrics\.py", "any"),
    ("stream status, stats, events", r"stream_status\.py|mobieye/stats\.py|fleet/", "any"),
    (
        "SRTP/RTP receive, jitter buffer",
        r"pylibsrtp|Session\.(un)?protect|aiortc/rtp\.py|rtcrtpreceiver\.py|"
        r"mobieye/webrtc/(jitter|bounded|keyframes|timestamps)",
        "any",
    ),
    (
        "DTLS, SCTP, data channel",
        r"rtcsctptransport|rtcdtlstransport|OpenSSL|webrtc/channel",
        "any",
    ),
    ("ICE, UDP sockets", r"aioice|selector_events|selectors\.py", "any"),
    # The stream's step outside the stages above: the thumbnail's resize (native, under
    # processor.py), frame bookkeeping.
    ("stream step: thumbnail, bookkeeping", r"cloud_worker/(processor|session)\.py", "leaf"),
    (
        "thread hand-off (executor, queues)",
        r"concurrent/futures|threading\.py|queue\.py|asyncio/(base_events|futures|tasks)",
        "leaf",
    ),
)
OTHER = "other (event loop, HTTP, MQTT)"
_COMPILED = [(stage, re.compile(pattern), scope) for stage, pattern, scope in RULES]


def stage_of(frames: Iterable[str]) -> str:
    """The stage of one sampled stack (its frames, root first)."""
    frames = list(frames)
    leaf = frames[-1] if frames else ""
    for stage, rule, scope in _COMPILED:
        if rule.search(leaf) if scope == "leaf" else any(rule.search(f) for f in frames):
            return stage
    return OTHER


def parse_raw(text: str) -> Counter[str]:
    """py-spy's ``--format raw`` (collapsed stacks: ``f1;f2;f3 COUNT`` a line) by stage."""
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        counts[stage_of(stack.split(";"))] += int(n)
    return counts


@dataclass(frozen=True)
class StageRow:
    stage: str
    share: float  # of the sampled CPU
    ms_per_frame: float | None  # of worker CPU per frame received, where that is known


def stage_table(
    counts: Mapping[str, int], cpu_s: float | None = None, frames: int | None = None
) -> list[StageRow]:
    """Stages by share of the samples, largest first; with the worker's CPU seconds over the
    profiled time and the frames it received meanwhile, each stage's CPU ms per frame."""
    counts = {stage: n for stage, n in counts.items() if stage != IDLE}
    total = sum(counts.values())
    if total == 0:
        return []
    per_frame = cpu_s * 1000 / frames if cpu_s is not None and frames else None
    return [
        StageRow(stage, n / total, None if per_frame is None else per_frame * n / total)
        for stage, n in sorted(counts.items(), key=lambda kv: -kv[1])
    ]


def table_markdown(rows: list[StageRow]) -> str:
    lines = ["| stage | share of worker CPU | CPU ms per frame |", "|---|---|---|"]
    for r in rows:
        ms = "" if r.ms_per_frame is None else f"{r.ms_per_frame:.2f}"
        lines.append(f"| {r.stage} | {r.share:.1%} | {ms} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m mobieye.bench.stages PROFILE.raw``: the table of a py-spy profile."""
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(
        prog="python -m mobieye.bench.stages",
        description="The worker's CPU by stage from a py-spy profile taken with "
        "'py-spy record --pid WORKER --format raw --nonblocking --rate 50 -o PROFILE.raw'.",
    )
    parser.add_argument("profile", type=Path, help="py-spy --format raw output")
    parser.add_argument("--cpu-s", type=float, help="the worker's CPU seconds while profiled")
    parser.add_argument("--frames", type=int, help="frames it received meanwhile")
    args = parser.parse_args(argv)
    try:
        text = args.profile.read_text()
    except OSError as exc:
        parser.error(f"cannot read {args.profile}: {exc.strerror}")
    print(table_markdown(stage_table(parse_raw(text), args.cpu_s, args.frames)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
