"""fleet.allowed_worker_urls: which advertised worker URLs a client may call (pure)."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any, Literal, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mobieye.config import FleetConfig
from mobieye.errors import ConfigError
from mobieye.fleet.allowlist import (
    MAX_URL_LENGTH,
    SETTING,
    UrlAllowlist,
    UrlRefused,
    parse_worker_url,
)

DEFAULT = UrlAllowlist(FleetConfig().allowed_worker_urls)


@pytest.fixture(autouse=True)
def no_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name is never resolved: any lookup fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"DNS lookup {args}")

    for name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr"):
        monkeypatch.setattr(socket, name, refuse)


# --- the defaults: loopback only ---------------------------------------------------------------


def test_the_defaults_are_the_configs() -> None:
    assert UrlAllowlist.from_config(FleetConfig()).patterns == (
        "127.0.0.0/8",
        "::1/128",
        "localhost",
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000",
        "http://127.0.0.1:8000/",
        "http://127.0.0.1:8000/offer?x=1#frag",
        "https://127.255.0.9",
        "HTTP://127.0.0.1:8000",
        "http://localhost:8000",
        "http://LOCALHOST:8000/",
        "HTTPS://LocalHost",
        "http://[::1]:8000",
        "http://[::1]",
        "http://[0:0:0:0:0:0:0:1]:8000/",
        "http://[::ffff:127.0.0.1]:8000",  # reaches 127.0.0.1
        "http://[::FFFF:7F00:1]",
        "http://127.0.0.1:00080",  # port 80, however written
    ],
)
def test_loopback_urls_are_allowed_by_default(url: str) -> None:
    assert DEFAULT.allows(url), DEFAULT.why_not(url)
    assert DEFAULT.why_not(url) is None


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        # Look-alikes: names that merely start like an allowed address or name.
        ("http://127.0.0.1.evil.com", "matches none of"),
        ("http://127.0.0.1.evil.com:8000/", "matches none of"),
        ("http://localhost.evil.com", "matches none of"),
        ("http://evil-localhost", "matches none of"),
        ("http://10.0.0.1:8000", "matches none of"),
        ("http://[::2]", "matches none of"),
        ("http://[::ffff:10.0.0.1]", "matches none of"),
        # Credentials, and the ways to hide a host behind them.
        ("http://user@127.0.0.1:8000", "credentials"),
        ("http://user:pw@localhost", "credentials"),
        ("http://localhost@evil.com", "credentials"),
        ("http://evil.com@127.0.0.1", "credentials"),
        ("http://:@127.0.0.1", "credentials"),
        ("http://evil.com\\@127.0.0.1", "backslash"),
        ("http://127.0.0.1\\.evil.com", "backslash"),
        # Schemes and hosts.
        ("ftp://127.0.0.1", "only http"),
        ("ws://127.0.0.1", "only http"),
        ("file:///etc/passwd", "only http"),
        ("javascript://127.0.0.1", "only http"),
        ("127.0.0.1:8000", "only http"),
        ("//127.0.0.1:8000", "only http"),
        ("http:/127.0.0.1", "only http"),
        ("", "only http"),
        ("http://", "no host"),
        ("http:///offer", "no host"),
        ("http://:8000", "no host"),
        ("http://[]:8000", "no host"),
        ("http://[::1", "closing"),
        ("http://[::1]x:80", "other than :PORT"),
        ("http://::1]:80", "']'"),
        ("http://[127.0.0.1]", "not an IPv6"),
        ("http://[fe80::1%25eth0]:8000", "zone"),
        ("http://localhost.", "not a valid host name"),
        ("http://127.0.0.1.", "not a valid host name"),
        ("http://a..b", "not a valid host name"),
        ("http://-local", "not a valid host name"),
        ("http://127.0.0.1%2e.evil.com", "not a valid host name"),
        ("http://" + "a" * 64 + ".com", "not a valid host name"),
        # Ports.
        ("http://127.0.0.1:0", "port 0"),
        ("http://127.0.0.1:65536", "port 65536"),
        ("http://127.0.0.1:99999999", "port '99999999'"),
        ("http://127.0.0.1:-1", "port '-1'"),
        ("http://127.0.0.1:+80", "port '+80'"),
        ("http://127.0.0.1:80a", "port '80a'"),
        ("http://127.0.0.1:", "port ''"),
        ("http://127.0.0.1:8000:9000", "port '8000:9000'"),
        ("http://[::1]:", "port ''"),
        ("http://127.0.0.1:٨٠", "not ASCII"),  # Arabic-Indic digits int() would accept
        # What a client would silently clean up.
        ("http://127.0.0.1\n.evil.com", "whitespace"),
        ("http://127.0.0.1\t:8000", "whitespace"),
        (" http://127.0.0.1", "whitespace"),
        ("http://127.0.0.1:8000 ", "whitespace"),
        ("http://127.0.0.1\x00.evil.com", "control"),
        ("http://\uff11\uff12\uff17.0.0.1", "not ASCII"),  # fullwidth 127: IDNA maps it to 127
        ("http://localh\u043est", "not ASCII"),  # a Cyrillic o
    ],
)
def test_refused_by_default(url: str, reason: str) -> None:
    why = DEFAULT.why_not(url)
    assert why is not None and not DEFAULT.allows(url)
    assert reason in why, why
    assert why.startswith(f"worker URL {url!r} refused by {SETTING}: "), why


@pytest.mark.parametrize(
    "host",
    ["2130706433", "0x7f000001", "0X7F000001", "0177.0.0.1", "0x7f.0.0.1", "127.1", "127.0.1",
     "017700000001", "127.0.0.01", "1.2.3.4.5", "0x", "256.0.0.1"],
)  # fmt: skip
def test_hosts_that_only_look_like_addresses_are_refused(host: str) -> None:
    """Some resolvers read these as 127.0.0.1 (inet_aton), others as names: refused, never
    guessed at, whatever the patterns (even one that allows every IPv4 address)."""
    anything = UrlAllowlist(["0.0.0.0/0", "http://*:*"])
    why = anything.why_not(f"http://{host}:8000")
    assert why is not None and "not a canonical IPv4 address" in why and "a.b.c.d" in why


def test_addresses_nobody_serves_on_are_refused_whatever_the_patterns() -> None:
    anything = UrlAllowlist(["0.0.0.0/0", "::/0", "http://*:*"])
    for url in ("http://0.0.0.0:8000", "http://[::]:8000", "http://[::ffff:0.0.0.0]"):
        assert "bind address" in (anything.why_not(url) or ""), url
    for url in ("http://224.0.0.1", "http://[ff02::1]"):
        assert "multicast" in (anything.why_not(url) or ""), url
    assert anything.allows("http://10.1.2.3:1")


# --- the three pattern forms -------------------------------------------------------------------


def test_cidr_patterns_match_literal_addresses_only() -> None:
    lan = UrlAllowlist(["10.0.0.0/8", "192.168.1.7", "fd00::/8"])
    assert lan.allows("http://10.200.3.4:8000")
    assert lan.allows("https://192.168.1.7")
    assert not lan.allows("https://192.168.1.8")
    assert lan.allows("http://[fd12:3456::1]:8000")
    assert lan.allows("http://[::ffff:10.9.9.9]:8000"), "an IPv4-mapped address is its IPv4 one"
    assert not lan.allows("http://[fe80::1]")
    # No DNS: a name is never looked up to see whether it lands in a CIDR.
    assert "matches none of" in (lan.why_not("http://worker.lan:8000") or "")
    assert not UrlAllowlist(["127.0.0.0/8"]).allows("http://localhost:8000")


def test_an_ipv4_mapped_address_matches_as_ipv4_not_ipv6() -> None:
    assert not UrlAllowlist(["::/0"]).allows("http://[::ffff:10.0.0.1]")
    assert not UrlAllowlist(["::ffff:0:0/96"]).allows("http://[::ffff:10.0.0.1]")
    assert UrlAllowlist(["10.0.0.0/8"]).allows("http://[::ffff:10.0.0.1]")
    assert parse_worker_url("http://[::ffff:10.0.0.1]").normalised == "http://10.0.0.1:80"


def test_name_patterns_match_exactly_ignoring_case() -> None:
    names = UrlAllowlist(["Worker.Example.org", " localhost ", "3f4e5a6b7c8d", "w_1.lan"])
    for url in (
        "https://worker.example.org",
        "http://WORKER.EXAMPLE.ORG:8000/",
        "http://3f4e5a6b7c8d:8000",  # a container's hostname may start with a digit
        "http://w_1.lan:8000",
        "http://localhost",
    ):
        assert names.allows(url), names.why_not(url)
    for url in (
        "https://a.worker.example.org",
        "https://worker.example.org.evil.com",
        "https://worker-example.org",
        "https://example.org",
        "http://127.0.0.1",  # a name pattern never matches an address
    ):
        assert not names.allows(url), url


def test_url_patterns_match_the_normalised_url() -> None:
    globs = UrlAllowlist(
        ["https://*.example.com:8443", "http://10.0.0.*:8000", "https://w.lan:443"]
    )
    for url in (
        "https://a.example.com:8443",
        "HTTPS://A.B.EXAMPLE.COM:8443/offer",
        "http://10.0.0.42:8000",
        "https://w.lan",  # the default port, written out in the normalised URL
        "https://w.lan:443/",
    ):
        assert globs.allows(url), globs.why_not(url)
    for url in (
        "http://a.example.com:8443",  # scheme
        "https://a.example.com:443",  # port
        "https://example.com:8443",  # "*." needs a label
        "https://a.example.com.evil.net:8443",
        "https://evil.net:8443/.example.com:8443",  # a path is no part of it
        "https://a.example.com:84430",
        "http://10.0.0.42:80",
        "http://w.lan",
    ):
        assert not globs.allows(url), url
    assert UrlAllowlist(["https://*.example.com:*"]).allows("https://x.example.com:1")


def test_parse_normalises() -> None:
    assert parse_worker_url("HTTP://LocalHost").normalised == "http://localhost:80"
    assert parse_worker_url("https://[0:0::1]:8443/x").normalised == "https://[::1]:8443"
    assert parse_worker_url("https://[::FFFF:7f00:1]").normalised == "https://127.0.0.1:443"
    url = parse_worker_url("http://10.0.0.5:8000/offer")
    assert (url.scheme, url.host, url.port) == ("http", "10.0.0.5", 8000)
    assert url.ip == ipaddress.IPv4Address("10.0.0.5")
    assert parse_worker_url("http://w.lan").ip is None
    with pytest.raises(UrlRefused, match="credentials"):
        parse_worker_url("http://a@b")


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("10.0.0.1/8", "did you mean 10.0.0.0/8"),
        ("10.0.0.0/33", "not a CIDR"),
        ("::1/129", "not a CIDR"),
        ("fe80::1%eth0", "zone"),
        ("10.0.0.0/8/8", "not a CIDR"),
        ("1.2.3", "not a canonical IPv4 address"),
        ("2130706433", "not a canonical IPv4 address"),
        ("", "empty"),
        ("   ", "empty"),
        ("a..b", "not a valid host name"),
        ("-bad.example", "not a valid host name"),
        ("exa mple.com", "not a valid host name"),
        ("localhost.", "not a valid host name"),
        ("*.example.com", "not a valid host name"),  # a wildcard needs the URL form
        ("ftp://*", "http:// or https://"),
        ("https://x/y", "http:// or https://"),
        ("https://u@x:1", "http:// or https://"),
        ("https://*.example.com", "never matches"),
        ("http://[::1]:8000", "give IPv6 hosts as a CIDR"),
    ],
)
def test_a_bad_pattern_is_a_config_error_naming_it(pattern: str, why: str) -> None:
    with pytest.raises(ConfigError) as exc:
        UrlAllowlist(["localhost", pattern])
    text = str(exc.value)
    assert SETTING in text and repr(pattern) in text and why in text, text


def test_a_pattern_must_be_text() -> None:
    with pytest.raises(ConfigError, match="not a string"):
        UrlAllowlist(cast(list[str], [42]))


def test_an_empty_list_allows_nothing_and_says_so() -> None:
    why = UrlAllowlist([]).why_not("http://127.0.0.1:8000")
    assert why == f"worker URL 'http://127.0.0.1:8000' refused by {SETTING}: the list is " + (
        "empty, so it allows no worker URL"
    )


def test_reasons_name_the_url_and_the_setting_and_stay_short() -> None:
    why = DEFAULT.why_not("http://10.1.1.1:8000")
    assert why == (
        f"worker URL 'http://10.1.1.1:8000' refused by {SETTING}: "
        "http://10.1.1.1:8000 matches none of 127.0.0.0/8, ::1/128, localhost"
    )
    for long in ("http://" + "a" * 1000 + ".com", "http://1." + "1" * 1000, "http://[" + "1" * 999):
        assert len(DEFAULT.why_not(long) or "") < 400, long
    assert len(DEFAULT.why_not("http://a:" + "1" * 1000) or "") < 400
    assert "longer than" in (DEFAULT.why_not("http://x/" + "a" * MAX_URL_LENGTH) or "")
    assert "not a string" in (DEFAULT.why_not(cast(str, None)) or "")


# --- properties --------------------------------------------------------------------------------

ports = st.integers(min_value=1, max_value=65535)


def _networks(
    version: Literal[4, 6],
) -> st.SearchStrategy[list[ipaddress.IPv4Network | ipaddress.IPv6Network]]:
    bits = 32 if version == 4 else 128
    one = st.builds(
        lambda ip, prefix: ipaddress.ip_network(f"{ip}/{prefix}", strict=False),
        st.ip_addresses(v=version),
        st.integers(min_value=0, max_value=bits),
    )
    return st.lists(one, max_size=4)


def _callable(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    target = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip
    return not (target.is_unspecified or target.is_multicast)


@given(st.ip_addresses(v=4), ports, _networks(4), st.sampled_from(["http", "https"]))
def test_ipv4_decision_is_membership(
    ip: ipaddress.IPv4Address, port: int, nets: list[ipaddress.IPv4Network], scheme: str
) -> None:
    allowlist = UrlAllowlist([str(n) for n in nets])
    expected = _callable(ip) and any(ip in n for n in nets)
    assert allowlist.allows(f"{scheme}://{ip}:{port}") is expected


@given(st.ip_addresses(v=6), ports, _networks(6), _networks(4))
def test_ipv6_decision_is_membership_of_the_address_it_reaches(
    ip: ipaddress.IPv6Address,
    port: int,
    nets6: list[ipaddress.IPv6Network],
    nets4: list[ipaddress.IPv4Network],
) -> None:
    allowlist = UrlAllowlist([str(n) for n in nets6 + nets4])
    mapped = ip.ipv4_mapped
    expected = _callable(ip) and (
        any(mapped in n for n in nets4) if mapped else any(ip in n for n in nets6)
    )
    for text in (ip.compressed, ip.exploded, ip.exploded.upper()):
        assert allowlist.allows(f"http://[{text}]:{port}/offer") is expected


label = st.from_regex(r"[a-z_][a-z0-9_-]{0,20}[a-z0-9_]|[a-z]", fullmatch=True)
host_names = st.lists(label, min_size=1, max_size=4).map(".".join)


@given(host_names, st.lists(host_names, max_size=4), _networks(4))
def test_names_match_only_names_and_never_a_cidr(
    host: str, names: list[str], nets: list[ipaddress.IPv4Network]
) -> None:
    allowlist = UrlAllowlist([*names, *[str(n) for n in nets]])
    assert allowlist.allows(f"http://{host}:8000") is (host in names)


def _flip_case(text: str, flips: list[bool]) -> str:
    return "".join(
        c.upper() if f else c for c, f in zip(text, flips + [False] * len(text), strict=False)
    )


@given(
    st.sampled_from(["http", "https"]),
    st.one_of(host_names, st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(
        lambda ip: f"[{ip}]")),
    st.lists(st.booleans(), max_size=60),
    st.sampled_from(["", "/", "/offer", "/a/b?c=d#e", "?x", "#y"]),
    st.sampled_from([["127.0.0.0/8", "::1/128", "localhost"], ["0.0.0.0/0", "::/0"],
                     ["https://*:443", "http://*.lan:80"], ["10.0.0.0/8", "a.lan"]]),
)  # fmt: skip
def test_case_paths_and_default_ports_never_change_the_decision(
    scheme: str, host: str, flips: list[bool], tail: str, patterns: list[str]
) -> None:
    allowlist = UrlAllowlist(patterns)
    base = f"{scheme}://{host}"
    decision = allowlist.allows(base)
    default_port = {"http": 80, "https": 443}[scheme]
    for variant in (
        _flip_case(base, flips),
        base + tail,
        f"{base}:{default_port}{tail}",
        _flip_case(f"{base}:{default_port}", flips) + tail,
    ):
        assert allowlist.allows(variant) is decision, variant


@given(st.text(max_size=80))
def test_any_text_gets_an_answer_never_an_exception(text: str) -> None:
    for url in (text, "http://" + text, "http://127.0.0.1:" + text):
        why = DEFAULT.why_not(url)
        assert why is None or (isinstance(why, str) and why.startswith("worker URL"))
        assert DEFAULT.allows(url) is (why is None)


@given(st.text(alphabet=st.characters(codec="ascii"), max_size=20), st.text(max_size=20))
def test_credentials_are_always_refused(user: str, rest: str) -> None:
    # "/", "?" and "#" end the authority: with one, the "@" is in the path, not credentials.
    user = user.translate(str.maketrans("", "", "/?#"))
    url = f"http://{user}@127.0.0.1:8000/{rest}"
    assert not UrlAllowlist(["0.0.0.0/0", "http://*:*"]).allows(url)
