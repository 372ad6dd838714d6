"""The bench's scoring on a hand-made run: every frame the clip played is scored, sent or not."""

from __future__ import annotations

import numpy as np

from mobieye.bench.run import ModeRun
from mobieye.bench.score import score_mode
from mobieye.detections import Detections

PERSON_A = [0.1, 0.1, 0.3, 0.6]
PERSON_B = [0.6, 0.1, 0.8, 0.6]


def boxes(*xyxy: list[float]) -> Detections:
    n = len(xyxy)
    return Detections(
        np.array(xyxy, np.float32).reshape(-1, 4), np.ones(n, np.float32), np.zeros(n, np.int64)
    )


def agent(source_frames: list[list[float]] | None) -> dict[str, object]:
    # Frames 0 and 2 of the clip were sent (seq 0, 1); frame 1 was decimated by the controller.
    # At a 50 ms SLA frame 1 is shown at 10.09 s, before frame 2's result (10.10 s).
    out: dict[str, object] = {
        "report": {"detector_runs": 2, "frames_sent": 2, "uplink_kbps": 300.0},
        "frames": [[0, 0, 10.0], [1, 2, 10.08]],
        "results": [  # seq, arrival, boxes, classes, scores: each within 20 ms
            [0, 10.02, [PERSON_A], [0], [0.9]],
            [1, 10.10, [PERSON_B], [0], [0.9]],
        ],
        "decisions": [],
    }
    if source_frames is not None:
        out["source_frames"] = source_frames
    return out


# The oracle: A on frames 0 and 1, B on frame 2. Frame 1 (decimated) shows frame 0's boxes.
ORACLE = [boxes(PERSON_A), boxes(PERSON_A), boxes(PERSON_B)]


def test_decimated_frames_are_scored_with_the_boxes_they_showed() -> None:
    played = [[0, 0, 10.0], [-1, 1, 10.04], [1, 2, 10.08]]
    run = ModeRun("mobieye", 1.0, 0.1, [agent(played)])
    m = score_mode(run, ORACLE, None, sla_ms=50, min_score=0.5)
    assert (m["frames"], m["frames_scored"]) == (2, 3)
    assert m["f1_vs_oracle"] == 1.0 and m["fallback_frames"] == 1
    assert m["sla_miss_ratio"] == 0.0  # latency is over the frames sent

    # Had frame 1 moved on (the oracle says B there), holding A's boxes would cost accuracy.
    moved = [boxes(PERSON_A), boxes(PERSON_B), boxes(PERSON_B)]
    m = score_mode(run, moved, None, sla_ms=50, min_score=0.5)
    assert m["f1_vs_oracle"] < 1.0
    # Scored on sent frames only (as before source frames were kept) it would look perfect.
    only_sent = score_mode(
        ModeRun("mobieye", 1.0, 0.1, [agent(None)]), moved, None, sla_ms=50, min_score=0.5
    )
    assert only_sent["frames_scored"] == 2 and only_sent["f1_vs_oracle"] == 1.0


def test_on_device_results_fill_an_outage_and_it_is_scored_alone() -> None:
    import pytest

    from mobieye.bench.outage import parse_outage
    from mobieye.errors import MobiEyeError

    # Frames 0..3 sent every 40 ms; the cloud answers frame 0 only, then goes silent.
    frames = [[i, i, 10.0 + 0.04 * i] for i in range(4)]
    cloud = [[0, 10.02, [PERSON_A], [0], [0.9]]]
    local = [[2, 10.11, [PERSON_B], [0], [0.8]]]  # the device detects frame 2 in time
    oracle = [boxes(PERSON_A), boxes(PERSON_A), boxes(PERSON_B), boxes(PERSON_B)]

    def run(with_local: bool) -> dict[str, object]:
        a: dict[str, object] = {
            "report": {"detector_runs": 1, "frames_sent": 4, "uplink_kbps": 300.0,
                       "boxes_from": {"cloud": 1, "local": 3 if with_local else 0}},
            "frames": frames, "results": cloud, "decisions": [],
            "local_results": local if with_local else [],
        }  # fmt: skip
        return score_mode(ModeRun("m", 1.0, 0.1, [a], outage=(10.03, 10.2)), oracle, None,
                          sla_ms=50, min_score=0.5)  # fmt: skip

    tracker_only, duplicated = run(False), run(True)
    assert duplicated["outage"]["frames"] == tracker_only["outage"]["frames"] == 3
    assert duplicated["outage"]["f1_vs_oracle"] > tracker_only["outage"]["f1_vs_oracle"]
    assert duplicated["frames_without_boxes"] == 0
    assert duplicated["boxes_from"] == {"cloud": 1, "local": 3}
    assert parse_outage("8:5", 20).seconds == 5
    for bad in ("8", "8:0", "-1:5", "18:5"):
        with pytest.raises(MobiEyeError):
            parse_outage(bad, 20)
