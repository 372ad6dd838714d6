from mobieye.config import KeyframeConfig
from mobieye.keyframe_policy import FrameFacts, KeyframeHistory, decide_keyframe

CFG = KeyframeConfig(interval=8, min_interval=2, max_age_s=0.5, scene_change=0.1)


def facts(seq: int, t: float | None = None, **kw: object) -> FrameFacts:
    base = {"change": 0.0, "track_quality": 1.0}
    base.update(kw)
    return FrameFacts(seq=seq, time_s=seq / 30 if t is None else t, **base)  # type: ignore[arg-type]


def run(seqs: range, **kw: object) -> list[int]:
    history = KeyframeHistory()
    detected = []
    for s in seqs:
        f = facts(s, **kw)
        if decide_keyframe(CFG, history, f).detect:
            history = history.after_detect(f)
            detected.append(s)
    return detected


def test_first_frame_then_every_interval() -> None:
    assert run(range(30)) == [0, 8, 16, 24]


def test_max_age_fires_on_slow_streams() -> None:
    history = KeyframeHistory().after_detect(facts(0, 0.0))
    assert decide_keyframe(CFG, history, facts(3, 0.6)).reason == "max_age"
    assert not decide_keyframe(CFG, history, facts(3, 0.2)).detect


def test_scene_change_and_tracking_quality_trigger_early() -> None:
    history = KeyframeHistory().after_detect(facts(0))
    assert decide_keyframe(CFG, history, facts(3, change=0.3)).reason == "scene_change"
    assert decide_keyframe(CFG, history, facts(3, track_quality=0.1)).reason == "tracking_quality"
    # but never more often than min_interval
    assert decide_keyframe(CFG, history, facts(1, change=0.9)).reason == "min_interval"


def test_damaged_and_busy_frames_are_never_detected() -> None:
    assert decide_keyframe(CFG, KeyframeHistory(), facts(0, damaged=True)).reason == "damaged"
    assert decide_keyframe(CFG, KeyframeHistory(), facts(0, detector_busy=True)).reason == "busy"
    # a damaged stretch delays the keyframe until a clean frame arrives
    history = KeyframeHistory().after_detect(facts(0))
    assert not decide_keyframe(CFG, history, facts(9, damaged=True)).detect
    assert decide_keyframe(CFG, history, facts(10)).reason == "interval"


def test_a_high_accuracy_target_still_lets_the_interval_and_age_grow_back() -> None:
    """target + 0.1 caps at 1.0: perfect agreement must count as "well above" it, or an
    interval shrunk by one bad patch never grows again."""
    from mobieye.keyframe_policy import tune_age, tune_interval

    kf = KeyframeConfig(interval=4, max_interval=30, max_age_s=0.5, max_age_cap_s=2.0)
    assert tune_interval(kf, 4, 1.0, 0.9) == 5
    assert tune_interval(kf, 4, 0.95, 0.9) == 4
    assert tune_age(kf, 0.5, 1.0, 0.95, "interval") > 0.5
