"""The MQTT link's reconnect rules on their own: backoff, its reset, how loudly to fail."""

from __future__ import annotations

import logging

from mobieye.mqtt.reconnect import Reconnect


def test_backoff_doubles_to_its_ceiling_and_resets_after_a_long_session() -> None:
    r = Reconnect(low_s=0.5, high_s=4.0)
    delays = [r.failed(None, rand=0.5) for _ in range(6)]  # rand 0.5: no jitter
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert r.failed(session_lasted_s=1.0, rand=0.5) == 4.0  # died at once: keep backing off
    assert r.failed(session_lasted_s=60.0, rand=0.5) == 0.5  # a real session: start over


def test_jitter_stays_within_a_quarter() -> None:
    r = Reconnect(low_s=1.0, high_s=1.0)
    assert r.failed(None, rand=0.0) == 0.75 and r.failed(None, rand=1.0) == 1.25


def test_refusals_go_quiet_after_a_few_unless_the_reason_changes() -> None:
    r = Reconnect(quiet_after=2)
    levels = [r.refusal_level("refused: bad password", refused=True) for _ in range(5)]
    assert levels == [(logging.ERROR, False), (logging.ERROR, False), (logging.WARNING, True),
                      (logging.DEBUG, False), (logging.DEBUG, False)]  # fmt: skip
    assert r.refusal_level("broker unreachable", refused=False) == (logging.WARNING, False)
    r.connected()
    assert r.refusal_level("broker unreachable", refused=False) == (logging.WARNING, False)
