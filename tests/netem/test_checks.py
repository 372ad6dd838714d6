"""check_can_emulate refuses clearly, and before creating anything (no root needed)."""

from __future__ import annotations

import pytest

from mobieye.netem import EmulatedLink, LinkProfile, check_can_emulate, hosts, netns


def test_not_root_is_a_permission_error_naming_the_way_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(PermissionError, match=r"--link lte needs root .*--link loopback"):
        check_can_emulate("lte")


def test_missing_ip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setattr(hosts, "_has_capability", lambda bit: True)
    monkeypatch.setattr(netns, "ip_binary", lambda: None)
    with pytest.raises(RuntimeError, match="iproute2"):
        check_can_emulate("3g")


def test_missing_tun_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setattr(hosts, "_has_capability", lambda bit: True)
    monkeypatch.setattr(netns, "ip_binary", lambda: "/usr/sbin/ip")
    monkeypatch.setattr(hosts, "TUN_DEVICE", "/nonexistent/tun")
    with pytest.raises(RuntimeError, match="/nonexistent/tun"):
        check_can_emulate()


def test_refusal_happens_before_any_namespace_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    added: list[str] = []
    monkeypatch.setattr(netns, "add", added.append)
    link = EmulatedLink(LinkProfile(name="custom", delay_ms=10.0))
    with pytest.raises(PermissionError), link:
        pass
    assert added == []
