"""Which advertised worker URLs a client may call: ``fleet.allowed_worker_urls``.

Anyone who can publish a worker state can advertise any URL, so edges, the phone flow and the
dashboard call a worker only if its URL matches one of the configured patterns:

- a CIDR (``10.0.0.0/8``, ``::1/128``; a bare address is a /32 or /128): URLs whose host is a
  literal IP address in it;
- a host name (``worker.example.org``, ``localhost``): URLs with exactly that host, ignoring
  case;
- a shell pattern containing ``://`` (``https://*.example.com:8443``), matched with
  :func:`fnmatch.fnmatchcase` against the normalised URL ``scheme://host:port``: lower case,
  the port always written out (80 for http, 443 for https), IPv6 in brackets.

Pure: nothing is resolved. A host name matches only a name or shell pattern, never a CIDR (DNS
is the attacker's to answer), and a host that only looks like an address is refused, not
guessed at: ``2130706433``, ``127.1``, ``0x7f.0.0.1`` and ``0177.0.0.1`` are 127.0.0.1 to some
resolvers and something else to others. An IPv4-mapped IPv6 address (``[::ffff:10.0.0.5]``)
reaches the IPv4 address, so it is matched as that address.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from mobieye.config import FleetConfig
from mobieye.errors import ConfigError

SETTING = "fleet.allowed_worker_urls"
MAX_URL_LENGTH = 2048  # a peer's value: bounded before any parsing
_SHOWN = 120  # characters of a refused URL quoted in a reason

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Scheme = Literal["http", "https"]
DEFAULT_PORTS: dict[str, int] = {"http": 80, "https": 443}

_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")  # RFC 1123, plus "_" (Docker)
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")  # what inet_aton would read as a number
_PORT = re.compile(r"[0-9]{1,5}")
# In a URL pattern: the scheme, then host characters, brackets, ':' and glob syntax only.
_URL_PATTERN = re.compile(r"(https?)://([a-z0-9_.\-:\[\]*?!]+)")


@dataclass(frozen=True)
class WorkerUrl:
    """The parts of an advertised URL that decide where a call goes."""

    scheme: Scheme
    host: str  # a lower-case name, or an address in its canonical text form
    ip: IPAddress | None  # for a literal address (an IPv4-mapped one as its IPv4 address)
    port: int

    @property
    def normalised(self) -> str:
        """``scheme://host:port`` with the port always written out, IPv6 in brackets."""
        host = f"[{self.host}]" if isinstance(self.ip, ipaddress.IPv6Address) else self.host
        return f"{self.scheme}://{host}:{self.port}"


class UrlRefused(ValueError):
    """Why a URL can't be a worker's: str(exc) is the reason."""


def parse_worker_url(url: str) -> WorkerUrl:
    """Split an advertised worker URL into scheme, host and port; raise UrlRefused saying why
    it can't be one (not http/https, credentials in it, no host, a bad port, a host that is
    neither a host name nor a canonical IP address)."""
    if not isinstance(url, str):
        raise UrlRefused("it is not a string")
    if len(url) > MAX_URL_LENGTH:
        raise UrlRefused(f"it is longer than {MAX_URL_LENGTH} characters")
    # urlsplit silently drops tabs and newlines, and readers disagree about "\": refuse both.
    if any(c.isspace() or ord(c) < 0x20 or c in "\x7f\\" for c in url):
        raise UrlRefused("it contains whitespace, control characters or a backslash")
    if not url.isascii():
        raise UrlRefused("it is not ASCII (write an international host name as xn--...)")
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in DEFAULT_PORTS:
        raise UrlRefused("only http:// and https:// URLs can be workers'")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "@" in authority:
        raise UrlRefused("it carries credentials (user@host)")
    if not authority:
        raise UrlRefused("it has no host")
    host_text, port_text = _split_authority(authority)
    port = _port(port_text, DEFAULT_PORTS[scheme])
    host, ip = _host(host_text, bracketed=authority.startswith("["))
    return WorkerUrl("https" if scheme == "https" else "http", host, ip, port)


def _split_authority(authority: str) -> tuple[str, str | None]:
    if authority.startswith("["):
        close = authority.find("]")
        if close < 0:
            raise UrlRefused("its IPv6 address has no closing ']'")
        host, after = authority[1:close], authority[close + 1 :]
        if after and not after.startswith(":"):
            raise UrlRefused("something follows its IPv6 address other than :PORT")
        return host, after[1:] if after else None
    if "]" in authority:
        raise UrlRefused("it has a ']' outside an IPv6 address")
    host, sep, port = authority.partition(":")
    return host, port if sep else None


def _port(text: str | None, default: int) -> int:
    if text is None:
        return default
    if not _PORT.fullmatch(text):
        raise UrlRefused(f"its port {_show(text)} is not a number from 1 to 65535")
    port = int(text)
    if not 1 <= port <= 65535:
        raise UrlRefused(f"its port {port} is not from 1 to 65535")
    return port


def _host(text: str, bracketed: bool) -> tuple[str, IPAddress | None]:
    if not text:
        raise UrlRefused("it has no host")
    if bracketed:
        if "%" in text:
            raise UrlRefused("its IPv6 address has a zone (%...), which is local to one host")
        try:
            v6 = ipaddress.IPv6Address(text)
        except ValueError:
            raise UrlRefused(f"[{_show(text, quote=False)}] is not an IPv6 address") from None
        return _address(v6.ipv4_mapped or v6)
    host = text.lower()
    labels = host.split(".")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        # Ends in a number: an address to every resolver, so only the canonical form will do.
        try:
            v4 = ipaddress.IPv4Address(host)
        except ValueError:
            raise UrlRefused(
                f"{_show(text)} is not a canonical IPv4 address (write it as four decimal numbers, "
                "a.b.c.d, without leading zeros)"
            ) from None
        return _address(v4)
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise UrlRefused(f"{_show(text)} is not a valid host name")
    return host, None


def _address(ip: IPAddress) -> tuple[str, IPAddress]:
    if ip.is_unspecified:
        raise UrlRefused(f"{ip} is a bind address, not one to call (set worker.advertise_url)")
    if ip.is_multicast:
        raise UrlRefused(f"{ip} is a multicast address")
    return ip.compressed, ip


# --- patterns ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Patterns:
    networks: tuple[IPNetwork, ...]
    names: frozenset[str]
    globs: tuple[str, ...]


def _compile(patterns: Iterable[str]) -> _Patterns:
    networks: list[IPNetwork] = []
    names: set[str] = set()
    globs: list[str] = []
    for raw in patterns:
        if not isinstance(raw, str):
            raise ConfigError(f"{SETTING}: pattern {raw!r} is not a string")
        pattern = raw.strip().lower()
        if "://" in pattern:
            globs.append(_glob(raw, pattern))
            continue
        if "%" in pattern:
            raise _bad(raw, "an IPv6 zone (%...) is local to one host")
        try:
            networks.append(ipaddress.ip_network(pattern, strict=True))
        except ValueError as exc:
            if "/" in pattern or ":" in pattern:
                raise _bad(raw, _network_problem(pattern, exc)) from None
            names.add(_name(raw, pattern))  # host names may start with a digit (3f4e5a6b7c8d)
    return _Patterns(tuple(networks), frozenset(names), tuple(globs))


def _bad(raw: str, why: str) -> ConfigError:
    return ConfigError(
        f"{SETTING}: bad pattern {raw!r}: {why}. Use a CIDR (10.0.0.0/8), a host name "
        "(worker.example.org) or a URL pattern (https://*.example.com:8443)"
    )


def _network_problem(pattern: str, exc: ValueError) -> str:
    if "host bits set" in str(exc):
        return f"it has host bits set (did you mean {ipaddress.ip_network(pattern, strict=False)}?)"
    return f"it is not a CIDR ({exc})"


def _name(raw: str, pattern: str) -> str:
    if not pattern:
        raise _bad(raw, "it is empty")
    try:
        host, ip = _host(pattern, bracketed=False)
    except UrlRefused as exc:
        raise _bad(raw, str(exc)) from None
    if ip is not None:  # a canonical address parses as a network first; kept for safety
        raise _bad(raw, "an address is a CIDR here, not a name")
    return host


def _glob(raw: str, pattern: str) -> str:
    m = _URL_PATTERN.fullmatch(pattern)
    if m is None:
        raise _bad(
            raw,
            "a URL pattern is http:// or https://, then a host pattern and :PORT, with no "
            "path, credentials or spaces",
        )
    # fnmatch reads "[...]" as a set of characters, so "[::1]" would match ":" or "1".
    if re.search(r"\[[0-9a-f.]*:[0-9a-f:.]*\]", pattern):
        raise _bad(raw, "fnmatch reads [...] as a set of characters; give IPv6 hosts as a CIDR")
    # The normalised URL always ends in its port: a pattern that can't match one matches none.
    if pattern[-1] not in "*?]" and not pattern[-1].isdigit():
        raise _bad(
            raw, f"it never matches: URLs are compared with their port written out ({pattern}:443)"
        )
    return pattern


class UrlAllowlist:
    """The advertised worker URLs a client may call (module docstring: the pattern forms)."""

    def __init__(self, patterns: Iterable[str]) -> None:
        """Raise ConfigError naming the first pattern that is none of the three forms."""
        self.patterns: tuple[str, ...] = tuple(patterns)
        self._compiled = _compile(self.patterns)

    @classmethod
    def from_config(cls, fleet: FleetConfig) -> UrlAllowlist:
        return cls(fleet.allowed_worker_urls)

    def allows(self, url: str) -> bool:
        return self.why_not(url) is None

    def why_not(self, url: str) -> str | None:
        """None if ``url`` may be called; otherwise why not, naming the URL and the setting."""
        try:
            parsed = parse_worker_url(url)
        except UrlRefused as exc:
            reason = str(exc)
        else:
            if self._matches(parsed):
                return None
            if self.patterns:
                reason = f"{parsed.normalised} matches none of {', '.join(self.patterns)}"
            else:
                reason = "the list is empty, so it allows no worker URL"
        return f"worker URL {_show(url)} refused by {SETTING}: {reason}"

    def _matches(self, url: WorkerUrl) -> bool:
        c = self._compiled
        if url.ip is not None:
            if any(url.ip in net for net in c.networks if net.version == url.ip.version):
                return True
        elif url.host in c.names:
            return True
        normalised = url.normalised
        return any(fnmatch.fnmatchcase(normalised, glob) for glob in c.globs)

    def __repr__(self) -> str:
        return f"UrlAllowlist({list(self.patterns)!r})"


def _show(value: object, quote: bool = True) -> str:
    """A peer's value in a message: quoted, and cut short (its length is the peer's)."""
    text = repr(value) if quote else str(value)
    if len(text) <= _SHOWN:
        return text
    return text[: _SHOWN - 4] + ("...'" if quote and text.endswith("'") else "...")
