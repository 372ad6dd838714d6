"""The per-direction link model, on synthetic timestamps (no root needed)."""

from __future__ import annotations

import random

import pytest

from mobieye.netem import LinkProfile, Shaper


def _shaper(seed: int = 0, **kwargs: float | None) -> Shaper:
    return Shaper(LinkProfile(name="t", **kwargs), random.Random(seed))  # type: ignore[arg-type]


def test_no_emulation_releases_immediately() -> None:
    shaper = _shaper()
    assert [shaper.admit(t, 1000) for t in (1.0, 1.5, 2.0)] == [1.0, 1.5, 2.0]


def test_fixed_delay() -> None:
    shaper = _shaper(delay_ms=35.0)
    assert shaper.admit(10.0, 100) == pytest.approx(10.035)


def test_jitter_stays_in_range_and_keeps_order() -> None:
    shaper = _shaper(delay_ms=35.0, jitter_ms=15.0)
    releases = []
    for i in range(2000):
        now = i * 0.02  # sparser than the jitter spread: the in-order rule rarely applies
        release = shaper.admit(now, 100)
        assert release is not None
        assert 0.020 - 1e-9 <= release - now <= 0.050 + 1e-9
        releases.append(release)
    assert releases == sorted(releases)
    delays = [r - i * 0.02 for i, r in enumerate(releases)]
    assert 0.033 < sum(delays) / len(delays) < 0.040  # uniform around 35 ms


def test_loss_rate_and_seed_reproducibility() -> None:
    def pattern(seed: int) -> list[bool]:
        shaper = _shaper(seed, loss=0.1)
        return [shaper.admit(i * 0.001, 100) is None for i in range(10_000)]

    lost = pattern(1)
    assert 0.09 < sum(lost) / len(lost) < 0.11
    assert pattern(1) == lost
    assert pattern(2) != lost


def test_rate_serializes_and_drops_tail_beyond_the_queue() -> None:
    # 1250-byte frames at 1000 kbit/s take 10 ms each; a 100 ms queue holds ~10 of them.
    shaper = _shaper(rate_kbps=1000.0, queue_ms=100.0)
    releases = [shaper.admit(0.0, 1250) for _ in range(50)]
    kept = [r for r in releases if r is not None]
    assert len(kept) == 11
    assert kept == pytest.approx([0.01 * (i + 1) for i in range(11)])
    assert shaper.stats.dropped_queue == 39
    # Once the queue drains the link accepts again.
    assert shaper.admit(1.0, 1250) == pytest.approx(1.01)


def test_counters() -> None:
    shaper = _shaper(delay_ms=10.0)
    release = shaper.admit(0.0, 500)
    assert release is not None
    shaper.record_sent(500, release - 0.0, 0.0002)
    stats = shaper.stats
    assert (stats.received, stats.forwarded, stats.bytes_forwarded) == (1, 1, 500)
    assert stats.mean_delay_ms == pytest.approx(10.0)
    assert stats.as_dict()["max_late_us"] == pytest.approx(200.0)
