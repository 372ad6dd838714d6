"""`bench --capacity`'s search, on made-up outcomes: doubling, then bisecting, and an answer
that a noisy pass above a failure can't inflate."""

from __future__ import annotations

from mobieye.bench.capacity import holds, next_streams, sustained


def search(limit: int, max_streams: int = 32) -> list[int]:
    """The counts tried when every count up to ``limit`` holds."""
    held: dict[int, bool] = {}
    tried = []
    while (n := next_streams(held, max_streams)) is not None:
        tried.append(n)
        held[n] = n <= limit
    assert sustained(held) == min(limit, max_streams)
    return tried


def test_doubles_then_bisects_to_the_exact_capacity() -> None:
    assert search(8) == [1, 2, 4, 8, 16, 12, 10, 9]
    assert search(5) == [1, 2, 4, 8, 6, 5]
    assert search(1) == [1, 2]
    assert search(0) == [1]  # not even one stream: 0, after one run
    assert search(100, max_streams=12) == [1, 2, 4, 8, 12]  # capped, all held


def test_a_pass_above_a_failure_does_not_count() -> None:
    assert sustained({1: True, 2: True, 4: False, 6: True}) == 2
    assert next_streams({1: True, 2: True, 4: False, 6: True}, 32) == 3
    assert sustained({}) == 0


def test_a_count_holds_on_both_f1_and_p95() -> None:
    good = {"f1_vs_oracle": 0.93, "latency_ms": {"p95": 120.0}}
    assert holds(good, 150)
    assert not holds({**good, "f1_vs_oracle": 0.85}, 150)
    assert not holds({**good, "latency_ms": {"p95": 151.0}}, 150)
    assert not holds({**good, "latency_ms": {"p95": None}}, 150)  # no result at all
