"""TrackAssigner: track ids across keyframes."""

from __future__ import annotations

import numpy as np
import pytest

from mobieye.detections import NO_TRACK, Detections
from mobieye.tracking import AssignmentEvents, TrackAssigner


def dets(boxes: list[tuple[float, float, float, float]], classes: list[int] | None = None,
         scores: list[float] | None = None) -> Detections:  # fmt: skip
    n = len(boxes)
    return Detections(
        np.array(boxes, dtype=np.float32).reshape(n, 4),
        np.array(scores if scores is not None else [0.9] * n, dtype=np.float32),
        np.array(classes if classes is not None else [0] * n, dtype=np.int64),
    )


A = (100.0, 100.0, 160.0, 250.0)
B = (300.0, 120.0, 360.0, 280.0)
C = (500.0, 50.0, 560.0, 200.0)


def shift(box: tuple[float, float, float, float], dx: float) -> tuple[float, float, float, float]:
    return (box[0] + dx, box[1], box[2] + dx, box[3])


def test_new_objects_get_new_monotonic_ids() -> None:
    ta = TrackAssigner()
    out = ta.update(dets([A, B]))
    assert list(out.tracker_id) == [1, 2]
    assert ta.events == AssignmentEvents(new=[1, 2], ended=[])
    out = ta.update(dets([A, B, C]))
    assert list(out.tracker_id) == [1, 2, 3]
    assert ta.events == AssignmentEvents(new=[3], ended=[])
    assert len(ta) == 3


def test_ids_persist_for_moved_box_and_follow_detection_order() -> None:
    ta = TrackAssigner()
    ta.update(dets([A, B]))
    # Detections come back in another order and moved a little.
    out = ta.update(dets([shift(B, 10), shift(A, -8)], scores=[0.5, 0.7]))
    assert list(out.tracker_id) == [2, 1]
    assert ta.events == AssignmentEvents(new=[], ended=[])
    tracks = ta.tracks
    np.testing.assert_allclose(tracks.xyxy[tracks.tracker_id == 1][0], shift(A, -8))
    assert float(tracks.confidence[tracks.tracker_id == 2][0]) == pytest.approx(0.5)
    counts = ta.counts
    assert counts[1].age == 2 and counts[1].hits == 2 and counts[1].misses == 0


def test_flow_moved_tracks_are_matched_not_the_stale_box() -> None:
    ta = TrackAssigner()
    ta.update(dets([A]))
    far = shift(A, 80)  # no overlap with the keyframe-time box
    assert list(TrackAssigner().update(dets([far])).tracker_id) == [1]
    # Without the flow update the far detection would be a new object...
    ta_static = TrackAssigner()
    ta_static.update(dets([A]))
    assert list(ta_static.update(dets([far])).tracker_id) == [2]
    # ...with it, the track has moved along and keeps its id.
    moved = ta.tracks
    moved.xyxy = np.array([shift(A, 75)], dtype=np.float32)
    ta.set_tracked(moved)
    np.testing.assert_allclose(ta.tracks.xyxy[0], shift(A, 75))
    assert list(ta.update(dets([far])).tracker_id) == [1]


def test_class_aware_matching() -> None:
    ta = TrackAssigner()
    ta.update(dets([A], classes=[0]))
    out = ta.update(dets([A], classes=[2]))
    assert list(out.tracker_id) == [2]
    assert ta.events.new == [2]
    # class_aware=False lets the box keep its id across a class flip.
    tb = TrackAssigner(class_aware=False)
    tb.update(dets([A], classes=[0]))
    assert list(tb.update(dets([A], classes=[2])).tracker_id) == [1]
    assert int(tb.tracks.class_id[0]) == 2


def test_iou_threshold() -> None:
    # 60 px wide boxes shifted by 40 px: IoU = 20/100 = 0.2.
    ta = TrackAssigner(iou_threshold=0.3)
    ta.update(dets([A]))
    assert list(ta.update(dets([shift(A, 40)])).tracker_id) == [2]
    tb = TrackAssigner(iou_threshold=0.15)
    tb.update(dets([A]))
    assert list(tb.update(dets([shift(A, 40)])).tracker_id) == [1]


def test_optimal_not_greedy_assignment() -> None:
    # Greedy on the best pair (t1-d0, IoU 0.94) would leave t0 unmatched (t0-d1 is 0.25, under
    # the threshold); the optimum matches both: t0-d0 (0.79) and t1-d1 (0.38).
    t0, t1 = (0.0, 0.0, 100.0, 100.0), (15.0, 0.0, 115.0, 100.0)
    d0, d1 = (12.0, 0.0, 112.0, 100.0), (60.0, 0.0, 160.0, 100.0)
    ta = TrackAssigner()
    ta.update(dets([t0, t1]))
    assert list(ta.update(dets([d0, d1])).tracker_id) == [1, 2]


def test_misses_then_expiry() -> None:
    ta = TrackAssigner(max_misses=1)
    ta.update(dets([A, B]))
    out = ta.update(dets([A]))  # B missed once: kept
    assert list(out.tracker_id) == [1]
    assert ta.events == AssignmentEvents(new=[], ended=[])
    assert sorted(ta.tracks.tracker_id.tolist()) == [1, 2]
    assert {tid: c.misses for tid, c in ta.counts.items()} == {1: 0, 2: 1}
    ta.update(dets([A]))  # missed twice: ended
    assert ta.events == AssignmentEvents(new=[], ended=[2])
    assert ta.tracks.tracker_id.tolist() == [1]


def test_missed_track_recovers_its_id() -> None:
    ta = TrackAssigner(max_misses=2)
    ta.update(dets([A, B]))
    ta.update(dets([A]))
    ta.update(dets([A]))
    out = ta.update(dets([A, B]))
    assert list(out.tracker_id) == [1, 2]
    assert {tid: c.misses for tid, c in ta.counts.items()} == {1: 0, 2: 0}


def test_zero_max_misses_ends_immediately_and_ids_never_reused() -> None:
    ta = TrackAssigner(max_misses=0)
    ta.update(dets([A]))
    ta.update(dets([]))
    assert ta.events == AssignmentEvents(new=[], ended=[1])
    assert len(ta.tracks) == 0
    assert list(ta.update(dets([A])).tracker_id) == [2]


def test_empty_updates() -> None:
    ta = TrackAssigner()
    out = ta.update(Detections.empty())
    assert len(out) == 0 and ta.events == AssignmentEvents()
    assert len(ta.tracks) == 0


def test_set_tracked_ignores_unknown_ids_and_input_is_not_mutated() -> None:
    ta = TrackAssigner()
    d = dets([A, B])
    ta.update(d)
    assert (d.tracker_id == NO_TRACK).all()  # update returns a copy
    stale = Detections(
        np.array([shift(A, 5), C, C], dtype=np.float32),
        np.ones(3, dtype=np.float32),
        np.zeros(3, dtype=np.int64),
        np.array([1, 99, NO_TRACK], dtype=np.int64),
    )
    ta.set_tracked(stale)
    xy = dict(zip(ta.tracks.tracker_id.tolist(), ta.tracks.xyxy, strict=True))
    np.testing.assert_allclose(xy[1], shift(A, 5))
    np.testing.assert_allclose(xy[2], B)


def test_reset_ends_everything() -> None:
    ta = TrackAssigner()
    ta.update(dets([A, B]))
    assert ta.reset() == AssignmentEvents(new=[], ended=[1, 2])
    assert len(ta) == 0
    assert list(ta.update(dets([A])).tracker_id) == [3]


def test_validation() -> None:
    with pytest.raises(ValueError):
        TrackAssigner(iou_threshold=0.0)
    with pytest.raises(ValueError):
        TrackAssigner(max_misses=-1)


def test_a_lost_track_keeps_its_id_when_seen_again_within_keep_lost() -> None:
    def person(x: float) -> Detections:
        return Detections(np.array([[x, 10, x + 40, 110]], np.float32), np.array([0.9], np.float32),
                          np.array([0]), np.array([-1]))  # fmt: skip

    none = Detections.empty()
    ta = TrackAssigner(max_misses=0, keep_lost=2)
    first = int(ta.update(person(100)).tracker_id[0])
    ta.update(none)  # missed once: hidden, not ended
    assert len(ta) == 0 and ta.events.ended == []
    again = ta.update(person(104))
    assert int(again.tracker_id[0]) == first and ta.events.new == []
    # Missed longer than keep_lost: it ends, and a later sighting is someone new.
    for _ in range(3):
        ta.update(none)
    assert ta.events.ended == [first] or first not in [int(t) for t in ta.tracks.tracker_id]
    later = ta.update(person(104))
    assert int(later.tracker_id[0]) != first and ta.events.new == [int(later.tracker_id[0])]
    # Without a buffer a miss ends the track at once (the worker's ghost-free display).
    plain = TrackAssigner(max_misses=0)
    tid = int(plain.update(person(100)).tracker_id[0])
    plain.update(none)
    assert plain.events.ended == [tid]
    assert int(plain.update(person(104)).tracker_id[0]) != tid
