from edge_agent.ledger import FrameLedger
from mobieye.clock import FrameClock
from mobieye.messages import Result, Timings


def result(pts: int) -> Result:
    return Result(
        seq=0, pts=pts, source="track", model="m", width=1, height=1, boxes=[], timings=Timings()
    )


def test_results_match_frames_by_pts_and_measure_latency() -> None:
    ledger = FrameLedger(FrameClock(3600))
    ledger.sent(0, 10.0)
    ledger.sent(1, 10.04)
    ledger.sent(2, 10.08)
    m = ledger.match(result(3600), 10.06)
    assert m is not None and m.frame.seq == 1 and m.in_order
    assert abs(m.latency_ms - 20.0) < 1e-6
    late = ledger.match(result(0), 10.07)  # frame 0's result after frame 1's
    assert late is not None and not late.in_order
    assert ledger.match(result(3600), 10.1) is None  # already matched
    assert ledger.match(result(999), 10.1) is None
    assert ledger.unmatched == 2 and ledger.out_of_order == 1


def test_old_frames_expire() -> None:
    ledger = FrameLedger(FrameClock(3000), keep_s=1.0)
    ledger.sent(0, 0.0)
    assert ledger.match(result(0), 5.0) is None


def test_late_frames_are_reported_once_and_answered_ones_never() -> None:
    ledger = FrameLedger(FrameClock(3000))
    for seq in range(4):
        ledger.sent(seq, seq * 0.04)
    ledger.match(result(3000), 0.05)  # frame 1 answered in time
    late = ledger.late_frames(now_s=0.2, deadline_s=0.1)
    assert [f.seq for f in late] == [0, 2]
    assert ledger.late_frames(now_s=0.2, deadline_s=0.1) == []
    assert [f.seq for f in ledger.late_frames(now_s=0.3, deadline_s=0.1)] == [3]
    assert ledger.late_cursor == 3
