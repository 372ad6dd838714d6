"""Bad input gets a clear error naming the problem, and the worker keeps serving."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow

BROWSERISH_SDP_WITHOUT_VIDEO = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
GARBLED_SDP = (
    "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:96 VP8/90000\r\n"
    "a=fingerprint:nonsense\r\na=setup:actpass\r\na=mid:0\r\na=sendonly\r\n"
)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{", "bad offer"),
        (b'{"type": "offer"}', "sdp"),
        (b'{"sdp": "v=0", "type": "answer"}', "type must be 'offer'"),
        (b'{"sdp": "hello", "type": "offer"}', "v=0"),
        (
            b'{"sdp": "'
            + BROWSERISH_SDP_WITHOUT_VIDEO.encode().replace(b"\r\n", b"\\r\\n")
            + b'", "type": "offer"}',
            "no video",
        ),
        (
            b'{"sdp": "'
            + GARBLED_SDP.encode().replace(b"\r\n", b"\\r\\n")
            + b'", "type": "offer"}',
            "SDP rejected",
        ),
        (b'{"sdp": "v=0' + b"a" * 70_000 + b'", "type": "offer"}', "exceeds the 65536-byte"),
        (b'{"sdp": "v=0", "type": "offer", "stream_id": "no spaces please"}', "stream_id"),
    ],
)
def test_bad_offers_get_400_with_the_reason(worker_url: str, body: bytes, needle: str) -> None:
    response = httpx.post(
        worker_url + "/offer",
        content=body,
        headers={"content-type": "application/json"},
        trust_env=False,
    )
    assert response.status_code == (413 if len(body) > 65536 else 400), response.text
    assert needle in response.json()["error"]
    assert httpx.get(worker_url + "/healthz", trust_env=False).status_code == 200


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mobieye.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_missing_model_fails_at_start_naming_the_path() -> None:
    r = run_cli("worker", "--model", "/nowhere/model.onnx", "--port", "0")
    assert r.returncode == 2
    assert "/nowhere/model.onnx" in r.stderr and "does not exist" in r.stderr


def test_model_of_unknown_format_is_refused(data_dir: Path) -> None:
    image = data_dir / "images" / "bus.jpg"
    r = run_cli("worker", "--model", str(image), "--port", "0")
    assert r.returncode == 2
    assert "unknown format" in r.stderr and str(image) in r.stderr


def test_unloadable_model_fails_at_start_naming_the_path(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"this is not a protobuf")
    r = run_cli("worker", "--model", str(broken), "--port", "0", timeout=120)
    assert r.returncode == 1
    assert "cannot load model" in r.stderr and str(broken) in r.stderr


def test_no_model_says_what_to_pass() -> None:
    r = run_cli("worker", "--port", "0")
    assert r.returncode == 2
    assert "--model" in r.stderr and "MOBIEYE_MODEL" in r.stderr


def test_unreadable_sources_say_which_and_why(tmp_path: Path) -> None:
    r = run_cli("edge", "--source", str(tmp_path / "missing.mp4"))
    assert r.returncode == 2 and "missing.mp4" in r.stderr and "no such file" in r.stderr
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 4096)
    r = run_cli("edge", "--source", str(broken))
    assert r.returncode == 2 and "broken.mp4" in r.stderr
    assert "cannot open" in r.stderr or "cannot read" in r.stderr


def test_unreachable_worker_is_named(pedestrian_clip: Path) -> None:
    r = run_cli("edge", "--source", str(pedestrian_clip), "--worker", "http://127.0.0.1:9")
    assert r.returncode == 2
    assert "cannot reach worker at http://127.0.0.1:9/offer" in r.stderr


def test_bad_config_value_is_named() -> None:
    r = run_cli("worker", "--imgsz", "333", "--model", "x.onnx")
    assert r.returncode == 2 and "detector.imgsz" in r.stderr and "multiple of 32" in r.stderr
