"""The edge's failover rules on their own: when a worker is lost, whom to try next."""

from __future__ import annotations

from edge_agent.failover import Failover


def test_silence_past_the_timeout_loses_the_worker() -> None:
    f = Failover(result_timeout_s=2.0)
    assert f.loss(now_s=11.0, connected_s=10.0, last_result_s=None, will_seen=False) is None
    assert f.loss(12.5, 10.0, None, False) == "no results for 2.0 s"  # connected, never answered
    assert f.loss(12.5, 10.0, 12.0, False) is None  # answering
    assert f.loss(14.5, 10.0, 12.0, False) == "no results for 2.0 s"
    # The source was down until 29.5 (a camera reopening): silence counts from then.
    assert f.loss(30.0, 10.0, 12.0, False, source_down_s=29.5) is None
    assert f.loss(31.0, 10.0, 12.0, False, source_down_s=29.5) is None
    assert f.loss(32.0, 10.0, 12.0, False, source_down_s=29.5) == "no results for 2.0 s"


def test_a_will_counts_only_once_results_stop_too() -> None:
    f = Failover(result_timeout_s=2.0)
    # A restarting broker sends every client's will: results still flowing win.
    assert f.loss(20.0, 10.0, 19.9, will_seen=True) is None
    assert f.loss(20.0, 10.0, 19.0, will_seen=True) == "the worker went offline (MQTT last will)"


def test_a_lost_worker_waits_before_it_is_tried_again() -> None:
    f = Failover(result_timeout_s=2.0, exclude_s=10.0)
    f.lost("w1", now_s=100.0)
    f.lost("w2", now_s=105.0)
    assert f.excluded(104.0) == {"w1", "w2"}
    assert f.excluded(111.0) == {"w2"}
    assert f.excluded(116.0) == set()
