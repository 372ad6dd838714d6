"""HTTPS for the dashboard (``--tls self-signed``) and ``mobieye demo --dashboard-port``: the
real CLI in a subprocess, on 127.0.0.1, fetched with httpx."""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from cryptography import x509

from mobieye.errors import ConfigError
from mobieye.mqtt.broker import MosquittoProcess
from mobieye.tls import certificate_covers, resolve_tls, self_signed
from tests.realparts import reason

URL = re.compile(r"MobiEye dashboard: (https?://\S+)")


def _wait_url(log: Path, proc: subprocess.Popen[bytes], timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = URL.search(log.read_text(errors="replace"))
        if found:
            return found.group(1)
        assert proc.poll() is None, f"exited with {proc.returncode}: {log.read_text()}"
        time.sleep(0.1)
    raise AssertionError(f"no dashboard URL printed: {log.read_text()}")


def _cli(args: list[str], log: Path, cache: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOBIEYE_")}
    env.update(
        MOBIEYE_CACHE_DIR=str(cache), MOBIEYE_DATA_DIR=os.environ.get("MOBIEYE_DATA_DIR", "")
    )
    if not env["MOBIEYE_DATA_DIR"]:
        del env["MOBIEYE_DATA_DIR"]
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-c", "import sys; from mobieye.cli import main; sys.exit(main())",
             *args],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT, as Ctrl-C: the demo then stops its worker child too."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_self_signed_certificate_is_made_once_and_covers_the_host(tmp_path: Path) -> None:
    files = self_signed("192.168.1.20", tmp_path)
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    assert ipaddress.ip_address("192.168.1.20") in san.get_values_for_type(x509.IPAddress)
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert files.key.stat().st_mode & 0o077 == 0
    before = files.cert.read_bytes()
    assert self_signed("127.0.0.1", tmp_path).cert.read_bytes() == before  # reused
    assert not certificate_covers(files.cert, ["10.0.0.9"])
    again = self_signed("10.0.0.9", tmp_path)  # another host: a new certificate
    assert again.cert.read_bytes() != before and certificate_covers(again.cert, ["10.0.0.9"])


def test_tls_flags_are_checked(tmp_path: Path) -> None:
    assert resolve_tls("127.0.0.1", None, None, None) is None
    with pytest.raises(ConfigError, match="go together"):
        resolve_tls("127.0.0.1", None, tmp_path / "c.pem", None)
    with pytest.raises(ConfigError, match="not found"):
        resolve_tls("127.0.0.1", None, tmp_path / "c.pem", tmp_path / "k.pem")
    with pytest.raises(ConfigError, match="exclude"):
        resolve_tls("127.0.0.1", "self-signed", tmp_path / "c.pem", None)


def test_extra_names_are_covered_and_checked(tmp_path: Path) -> None:
    files = self_signed("127.0.0.1", tmp_path, extra_names=["cam.example", "203.0.113.5"])
    assert certificate_covers(files.cert, ["cam.example", "203.0.113.5", "localhost"])
    with pytest.raises(ConfigError, match="goes with --tls self-signed"):
        resolve_tls("127.0.0.1", None, None, None, ["cam.example"])
    for bad in ("a b", "https://cam.example", "-x.example", ""):
        with pytest.raises(ConfigError, match="not a host name or IP"):
            resolve_tls("127.0.0.1", "self-signed", None, None, [bad])


@pytest.fixture
def lan_address() -> Iterator[str]:
    """A LAN-like address on this test's own loopback device, so a dashboard bound to 0.0.0.0
    has one to offer a phone. Only where the suite runs in its own network namespace (the one
    scripts/test.sh makes): the host's interfaces are never touched."""
    if set(psutil.net_if_addrs()) != {"lo"} or os.geteuid() != 0:
        pytest.skip(f"{reason('root')} (in the suite's own network namespace, lo only)")
    address = "192.0.2.77"  # TEST-NET-1: documentation only, never routed
    subprocess.run(["ip", "addr", "add", f"{address}/32", "dev", "lo"], check=True)
    try:
        yield address
    finally:
        subprocess.run(["ip", "addr", "del", f"{address}/32", "dev", "lo"], check=False)


def test_dashboard_on_every_interface_prints_phone_urls_its_certificate_covers(
    broker: MosquittoProcess, lan_address: str, tmp_path: Path
) -> None:
    log = tmp_path / "dashboard.log"
    cache = tmp_path / "cache"
    token = "p" * 24
    proc = _cli(
        ["dashboard", "--broker", broker.url, "--host", "0.0.0.0", "--port", "0",
         "--token", token, "--tls", "self-signed", "--tls-name", "cam.example"],
        log, cache,
    )  # fmt: skip
    try:
        _wait_url(log, proc, 30)
        deadline = time.monotonic() + 5
        phone = None
        while phone is None and time.monotonic() < deadline:
            found = re.search(r"a phone's camera: (https://\S+)", log.read_text())
            phone = found.group(1) if found else None
            time.sleep(0.1)
        assert phone is not None, log.read_text()
        # A grant for one stream, never the token (a phone holding it could command the fleet).
        assert phone.startswith(f"https://{lan_address}:") and "/phone?grant=" in phone
        assert token not in log.read_text().split("a phone's camera:")[1]
        cert = cache / "tls" / "dashboard-cert.pem"
        assert certificate_covers(cert, [lan_address, "cam.example", "localhost", "127.0.0.1"])
        # The phone's URL verifies against the certificate: HTTPS with the right name.
        with httpx.Client(
            verify=ssl.create_default_context(cafile=cert), trust_env=False, timeout=5
        ) as client:
            assert client.get(phone).status_code == 200
            base = phone.split("/phone?")[0]
            assert client.get(base + "/static/phone.js").status_code == 200  # the grant cookie
            assert client.get(base + "/").status_code == 401  # ...opens nothing else
            assert client.get(base + "/api/workers").status_code == 401
    finally:
        stop(proc)


def test_dashboard_serves_https_with_a_self_signed_certificate(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    log = tmp_path / "dashboard.log"
    cache = tmp_path / "cache"
    proc = _cli(
        ["dashboard", "--broker", broker.url, "--host", "127.0.0.1", "--port", "0",
         "--token", "t" * 24, "--tls", "self-signed"],
        log, cache,
    )  # fmt: skip
    try:
        url = _wait_url(log, proc, 30)
        assert url.startswith("https://127.0.0.1:")
        base = url.split("/?", 1)[0]
        cert = cache / "tls" / "dashboard-cert.pem"
        assert certificate_covers(cert, ["127.0.0.1", "localhost"])
        # Verified against the generated certificate (its SAN names 127.0.0.1).
        with httpx.Client(
            verify=ssl.create_default_context(cafile=cert), trust_env=False, timeout=5
        ) as client:
            assert client.get(base + "/healthz").status_code == 200
            r = client.get(base + "/api/workers", headers={"authorization": f"Bearer {'t' * 24}"})
            assert r.status_code == 200
        with pytest.raises(httpx.HTTPError):  # plain HTTP is not served there
            httpx.get(base.replace("https://", "http://") + "/healthz", trust_env=False, timeout=2)
    finally:
        stop(proc)


@pytest.mark.slow
def test_demo_serves_the_dashboard_of_its_stream(
    data_dir: Path, model_path: Path, tmp_path: Path
) -> None:
    clip = data_dir / "videos" / "TUD-Campus.mp4"
    log = tmp_path / "demo.log"
    proc = _cli(
        ["demo", "--source", str(clip), "--model", str(model_path), "--imgsz", "320",
         "--duration", "6", "--dashboard-port", "0"],
        log, tmp_path / "cache",
    )  # fmt: skip
    try:
        url = _wait_url(log, proc, 60)
        base, _, query = url.partition("/?")
        token = query.removeprefix("token=")
        assert base.startswith("http://127.0.0.1:") and len(token) >= 16
        headers = {"authorization": f"Bearer {token}"}
        deadline = time.monotonic() + 60
        seen: list[object] = []
        with httpx.Client(base_url=base, headers=headers, trust_env=False, timeout=5) as client:
            assert (
                client.get("/api/streams", headers={"authorization": "Bearer x"}).status_code == 401
            )
            while time.monotonic() < deadline and proc.poll() is None:
                seen = client.get("/api/streams").json()
                if any(s["fps"] and s["fps"] > 0 for s in seen):  # type: ignore[index]
                    break
                time.sleep(0.2)
            else:
                raise AssertionError(
                    f"no live stream on the demo's dashboard: {seen}\n{log.read_text()}"
                )
            workers = client.get("/api/workers").json()
            assert workers and workers[0]["status"] == "online", workers
        assert proc.wait(60) == 0, log.read_text()
    finally:
        stop(proc)
