"""The soak's resource verdict: growth after warm-up and latency drift fail it; noise does not."""

from __future__ import annotations

from mobieye.bench.soak_resources import ResourceLimits, resource_problems, resource_windows

MB = 2**20


def samples(rss_mb: list[float], fds: int = 40) -> list[dict[str, float]]:
    return [
        {"t": i * 60 + k * 10, "rss": mb * MB, "fds": fds, "threads": 30, "tasks": 12}
        for i, mb in enumerate(rss_mb)
        for k in range(6)
    ]


def latencies(p_ms: list[float]) -> list[tuple[float, float]]:
    return [(i * 60 + k, ms) for i, ms in enumerate(p_ms) for k in range(60)]


def test_windows_hold_median_rss_and_latency_percentiles() -> None:
    rows = resource_windows(samples([900, 950, 951]), latencies([30, 31, 29]), 60)
    assert [r["rss_mb"] for r in rows] == [900, 950, 951]
    assert rows[1]["latency_ms"]["p95"] == 31
    assert rows[0]["tasks"] == 12 and rows[0]["fds"] == 40


def test_windows_after_the_last_result_are_left_out() -> None:
    # The worker is still sampled while the streams close: that window judges no soak.
    rows = resource_windows(samples([900, 950, 951, 951]), latencies([30, 31, 29]), 60)
    assert [r["t0_s"] for r in rows] == [0, 60, 120]
    assert all(r["latency_ms"]["p95"] is not None for r in rows)


def test_a_last_window_the_run_barely_covers_is_left_out() -> None:
    # The streams stop half a second into the 4th window: its few slow results are no window.
    tail = [*latencies([30, 31, 29]), (180.2, 110.0), (180.4, 120.0)]
    rows = resource_windows(samples([900, 950, 951, 951]), tail, 60)
    assert [r["t0_s"] for r in rows] == [0, 60, 120]
    assert resource_problems(rows, ResourceLimits()) == []
    # Half a window or more is judged like any other.
    rows = resource_windows(samples([900, 950, 951, 951]), [*tail, (215.0, 115.0)], 60)
    assert [r["t0_s"] for r in rows] == [0, 60, 120, 180]


def test_steady_memory_and_latency_pass() -> None:
    rows = resource_windows(
        samples([800, 1000, 1010, 1020, 1015]), latencies([50, 30, 32, 31, 33]), 60
    )
    assert resource_problems(rows, ResourceLimits()) == []


def test_memory_growing_after_warm_up_fails() -> None:
    rows = resource_windows(samples([800, 1000, 1030, 1060, 1090]), latencies([30] * 5), 60)
    (problem,) = resource_problems(rows, ResourceLimits())
    assert "RSS grew 9.0%" in problem and "1000.0 -> 1090.0 MB" in problem


def test_latency_drifting_up_fails() -> None:
    rows = resource_windows(samples([1000] * 7), latencies([30, 30, 31, 30, 60, 70, 80]), 60)
    (problem,) = resource_problems(rows, ResourceLimits())
    assert "latency drifted" in problem


def test_growing_fds_fail_and_short_runs_say_so() -> None:
    rows = resource_windows(samples([1000] * 3, fds=40), latencies([30] * 3), 60)
    rows[-1]["fds"] = 200
    assert any("fds kept growing" in p for p in resource_problems(rows, ResourceLimits()))
    assert "too short" in resource_problems(rows[:2], ResourceLimits())[0]
