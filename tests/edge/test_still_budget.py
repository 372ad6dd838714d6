"""The edge-first uplink's budget: a token bucket over controller.uplink_kbps and the stills'
quality, governed by refusals and the keyframe round trip (pure)."""

from __future__ import annotations

from edge_agent.still_budget import DEPTH_S, MIN_QUALITY, START_QUALITY, StillBudget


def test_no_budget_never_refuses_and_caps_quality_at_the_start() -> None:
    b = StillBudget(None)
    for i in range(100):
        assert b.allows(i * 0.01)
        b.spend(i * 0.01, 50_000)
    assert b.adjust(None, 100) == START_QUALITY
    assert b.too_small() is None


def test_the_bucket_paces_stills_to_the_budget() -> None:
    b = StillBudget(80.0)  # 10 KB/s
    sent, t = 0, 0.0
    while t < 60:
        if b.allows(t):
            b.spend(t, 10_000)
            sent += 1
        t += 0.04
    # 60 s at 10 KB/s is 60 stills of 10 KB, plus the bucket's starting depth.
    assert 59 <= sent <= 60 + DEPTH_S + 1
    assert b.sent_bytes * 8 / 1000 / 60 <= 80 * (1 + (DEPTH_S + 1) / 60)


def test_refusals_and_a_slow_round_trip_lower_quality_and_room_raises_it() -> None:
    b = StillBudget(80.0)
    b.allows(0.0)
    b.spend(0.0, 60_000)  # overdraws the bucket
    assert not b.allows(0.1)
    assert b.adjust(None, 100) == START_QUALITY - 10
    assert b.adjust(250.0, 100) == max(MIN_QUALITY, START_QUALITY - 20)  # over the SLA
    b2 = StillBudget(1000.0, quality=50)
    b2.allows(0.0)
    assert b2.adjust(20.0, 100) == 55  # room in the bucket, fast answers


def test_a_budget_too_small_for_any_still_says_so() -> None:
    b = StillBudget(1.0)  # 500 bytes per 4 s
    now = 0.0
    b.allows(now)
    b.spend(now, 20_000)
    while b.quality > MIN_QUALITY:
        now += 1
        assert not b.allows(now)
        b.adjust(None, 100)
        assert b.stale  # the lower quality's size is not known yet
        b.observe(8_000)
    message = b.too_small()
    assert message is not None and "uplink_kbps=1" in message and "no keyframe fits" in message
