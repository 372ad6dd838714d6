import numpy as np
import pytest

from mobieye.accuracy import F1Score, match_counts
from mobieye.config import KeyframeConfig
from mobieye.detections import Detections
from mobieye.display import ArrivedResult, display_timeline
from mobieye.keyframe_policy import MIN_AGE_S, tune_age, tune_interval


def boxes(*rows: tuple[float, float, float, float]) -> np.ndarray:
    return np.array(rows, np.float32).reshape(-1, 4)


def test_f1_matches_one_to_one_at_iou_half_and_by_class() -> None:
    truth = boxes((0, 0, 10, 10), (20, 20, 30, 30))
    pred = boxes((1, 1, 10, 10), (0, 0, 10, 10), (50, 50, 60, 60))
    cls = np.zeros(3, np.int64)
    assert match_counts(pred, cls, truth, np.zeros(2, np.int64)) == (1, 2, 1)
    # the same box of another class is no match
    assert match_counts(pred[:1], np.ones(1, np.int64), truth[:1], np.zeros(1, np.int64)) == (
        0,
        1,
        1,
    )
    score = F1Score()
    score.add((8, 1, 1))
    score.add((0, 0, 0))
    assert abs(score.f1 - 16 / 18) < 1e-9 and score.frames == 2


def record(seq: int, arrival: float) -> ArrivedResult:
    return ArrivedResult(seq, arrival, Detections(boxes((0, 0, 1, 1)), [0.9], [0]))


def test_late_results_fall_back_to_the_newest_one_in_time() -> None:
    frames = [(0, 0.0), (1, 0.1), (2, 0.2), (3, 0.3)]
    results = [record(0, 0.05), record(1, 0.35), record(3, 0.32)]  # frame 1 late, 2 lost
    shown = display_timeline(frames, results, deadline_ms=100)
    assert [d.shown for d in shown] == ["own", "fallback", "fallback", "own"]
    assert shown[1].result is not None and shown[1].result.seq == 0
    assert display_timeline([(0, 0.0)], [], 100)[0].shown == "none"


def test_interval_tuning_moves_toward_the_accuracy_target() -> None:
    cfg = KeyframeConfig(interval=8, min_interval=2, max_interval=12)
    assert tune_interval(cfg, 8, agreement=0.5, target=0.85) == 5  # drift: shorten fast
    assert tune_interval(cfg, 8, agreement=0.99, target=0.85) == 9  # stable: lengthen slowly
    assert tune_interval(cfg, 8, agreement=0.9, target=0.85) == 8
    assert tune_interval(cfg, 2, agreement=0.1, target=0.85) == 2
    assert tune_interval(cfg, 12, agreement=1.0, target=0.85) == 12


def test_age_limit_follows_drift_like_the_interval() -> None:
    cfg = KeyframeConfig(max_age_s=0.5, max_age_cap_s=2.0)

    def tuned(age: float, agreement: float, reason: str = "max_age") -> float:
        return tune_age(cfg, age, agreement, target=0.85, reason=reason)

    assert tuned(0.5, 0.99) == pytest.approx(0.55)  # stable: lengthen
    assert tuned(0.5, 0.5) == pytest.approx(0.35)  # drift on a keyframe the clock forced
    # Drift on a keyframe the interval asked for is the interval's to answer, not the clock's.
    assert tuned(0.5, 0.5, reason="interval") == 0.5
    assert tuned(0.5, 0.9) == 0.5
    assert tuned(1.95, 1.0) == 2.0  # capped
    assert tuned(MIN_AGE_S, 0.0) == MIN_AGE_S  # floored
    # A stable scene at 10 fps: the clock stops forcing a detection every 5 frames.
    age = 0.5
    for _ in range(10):
        age = tune_age(cfg, age, agreement=1.0, target=0.85, reason="interval")
    assert age * 10 > cfg.max_interval


def test_age_cap_follows_a_start_set_past_it() -> None:
    assert KeyframeConfig(max_age_s=5).max_age_cap_s == 5
    with pytest.raises(ValueError, match=r"max_age_s 5\.0 must not exceed max_age_cap_s 1\.0"):
        KeyframeConfig(max_age_s=5, max_age_cap_s=1)
