"""The edge's failover rules on their own: when a worker is lost, whom to try next."""

from __future__ import annotations

from edge_agent.failover import Failover


def test_silence_past_the_timeout_loses_the_worker() -> None:
    f = Failover(result_timeout_s=2.0)
    kw = {"now_s": 11.0, "connected_s": 10.0, "last_result_s": None, "will_seen": False}
    assert f.loss(**kw, waiting_since_s=10.1) is None  # type: ignore[arg-type]
    assert f.loss(12.5, 10.0, None, False, 10.1) == "no results for 2.0 s"  # never answered
    assert f.loss(12.5, 10.0, 12.0, False, 12.1) is None  # answering
    assert f.loss(14.5, 10.0, 12.0, False, 12.1) == "no results for 2.0 s"
    # Nothing sent (the source is reopening): silence is not the worker's fault.
    assert f.loss(30.0, 10.0, 12.0, False, None) is None
    # Frames sent again after the gap: the wait counts from the first of them.
    assert f.loss(31.0, 10.0, 12.0, False, 30.0) is None
    assert f.loss(32.5, 10.0, 12.0, False, 30.0) == "no results for 2.0 s"


def test_a_will_counts_only_once_results_stop_too() -> None:
    f = Failover(result_timeout_s=2.0)
    # A restarting broker sends every client's will: results still flowing win.
    assert f.loss(20.0, 10.0, 19.9, True, None) is None
    assert f.loss(20.0, 10.0, 19.0, True, None) == "the worker went offline (MQTT last will)"


def test_a_lost_worker_waits_before_it_is_tried_again() -> None:
    f = Failover(result_timeout_s=2.0, exclude_s=10.0)
    f.lost("w1", now_s=100.0)
    f.lost("w2", now_s=105.0)
    assert f.excluded(104.0) == {"w1", "w2"}
    assert f.excluded(111.0) == {"w2"}
    assert f.excluded(116.0) == set()
