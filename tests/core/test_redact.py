"""Secrets in URLs never reach a log line; neither do control characters."""

from __future__ import annotations

import pytest

from mobieye.redact import printable, redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("rtsp://user:pass@10.0.0.5/live", "rtsp://user:***@10.0.0.5/live"),
        ("rtsp://admin:pw@cam.local:8554/s/1?ch=2", "rtsp://admin:***@cam.local:8554/s/1?ch=2"),
        ("rtsp://u:p@ss:w@rd@host/x", "rtsp://u:***@host/x"),  # an unescaped "@" in it
        ("rtsp://u:@host/x", "rtsp://u:***@host/x"),  # an empty password is masked too
        ("rtsp://viewer@host/x", "rtsp://viewer@host/x"),  # a user name alone is no secret
        ("http://[::1]:8080/video.mjpg", "http://[::1]:8080/video.mjpg"),
        ("http://cam/video?user=a&pwd=x&Password=y&fps=5", "http://cam/video?user=a&pwd=***&Password=***&fps=5"),
        ("https://h/s?token=abc;keyframe=1", "https://h/s?token=***;keyframe=1"),
        ("rtsp://u:p@host:notaport/x", "rtsp://u:***@host:notaport/x"),
    ],
)  # fmt: skip
def test_passwords_are_masked(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert redact_url(shown) == shown  # already safe: unchanged


def test_an_unparsable_url_loses_all_its_userinfo() -> None:
    assert redact_url("http://u:secret@[::1/x") == "http://***@[::1/x"


def test_control_characters_are_escaped() -> None:
    forged = "rtsp://h/x\n2026-01-01 ERROR forged line\x1b[31m"
    assert redact_url(forged) == "rtsp://h/x\\n2026-01-01 ERROR forged line\\x1b[31m"
    assert printable("a\tb\u2028c é") == "a\\tb\\u2028c é"
