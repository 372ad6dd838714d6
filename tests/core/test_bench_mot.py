"""Tracking quality through TrackEval on hand-made tracks: what a perfect tracker scores,
what an identity swap costs, and that boxes without ids are not let off."""

from __future__ import annotations

import numpy as np

from mobieye.bench.mot import bytetrack_anchor, mot_metrics
from mobieye.detections import Detections

A = [0.1, 0.1, 0.3, 0.6]
B = [0.6, 0.1, 0.8, 0.6]


def people(boxes: list[list[float]], ids: list[int]) -> Detections:
    n = len(boxes)
    return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.full(n, 0.9, np.float32),
                      np.zeros(n, np.int64), np.array(ids, np.int64))  # fmt: skip


def test_perfect_tracks_score_one_and_a_swap_costs_an_id_switch() -> None:
    truth = [people([A, B], [1, 2]) for _ in range(10)]
    perfect = mot_metrics([(t, people([A, B], [7, 8])) for t in truth])
    assert perfect == {"mota": 1.0, "idf1": 1.0, "id_switches": 0, "hota": 1.0}
    swapped = [people([A, B], [7, 8])] * 5 + [people([A, B], [8, 7])] * 5
    m = mot_metrics(list(zip(truth, swapped, strict=True)))
    assert m["id_switches"] == 2 and m["idf1"] < 0.6 and m["mota"] < 1.0 and m["hota"] < 1.0
    no_ids = mot_metrics([(t, people([A, B], [-1, -1])) for t in truth])
    assert no_ids["idf1"] < 0.2 and no_ids["id_switches"] > 0  # no ids: a new identity a frame


def test_the_bytetrack_anchor_follows_steady_detections() -> None:
    truth, oracle = [], []
    for f in range(30):
        dx = 0.005 * f
        moved = [[A[0] + dx, A[1], A[2] + dx, A[3]], [B[0] - dx, B[1], B[2] - dx, B[3]]]
        truth.append(people(moved, [1, 2]))
        oracle.append(people(moved, [-1, -1]))
    m = bytetrack_anchor(oracle, truth, fps=25, min_score=0.5)
    assert m["id_switches"] == 0 and m["idf1"] > 0.9, m
