"""Link profiles: the named table and lookup errors."""

from __future__ import annotations

import pytest

from mobieye.netem import LOOPBACK, PROFILES, LinkProfile, get_profile


def test_named_profiles_exist_with_documented_figures() -> None:
    assert {"loopback", "lan", "wifi", "lte", "3g"} <= set(PROFILES)
    lte = get_profile("lte")
    assert (lte.delay_ms, lte.jitter_ms, lte.loss, lte.rate_kbps) == (35.0, 15.0, 0.01, 5_000)
    assert lte.rtt_ms == 70.0
    assert get_profile("3g").rate_kbps == 1_000
    assert get_profile("lan").loss == 0.0
    assert get_profile("wifi").loss == pytest.approx(0.002)
    assert all(p.name == name for name, p in PROFILES.items())


def test_loopback_is_the_no_emulation_marker() -> None:
    assert get_profile("loopback") is LOOPBACK
    assert not LOOPBACK.emulated
    assert all(p.emulated for name, p in PROFILES.items() if name != "loopback")


def test_unknown_profile_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown link profile 'dialup'") as info:
        get_profile("dialup")
    for name in PROFILES:
        assert name in str(info.value)


@pytest.mark.parametrize(
    "kwargs",
    [{"delay_ms": -1.0}, {"jitter_ms": -1.0}, {"loss": 1.0}, {"loss": -0.1}, {"rate_kbps": 0.0}],
)
def test_invalid_profiles_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        LinkProfile(name="bad", **kwargs)  # type: ignore[arg-type]


def test_profiles_are_frozen() -> None:
    with pytest.raises(AttributeError):
        get_profile("lte").delay_ms = 1.0  # type: ignore[misc]
