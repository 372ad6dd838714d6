"""HTTPS for the dashboard and the worker: a given certificate, or a self-signed one kept in
the cache dir, and the SHA-256 fingerprint a client pins it by.

A phone's browser gives ``getUserMedia`` (the /phone page) only to a secure context, so a
dashboard opened from another device must be served over HTTPS. A worker's signalling carries the
SDP's DTLS fingerprints: over HTTPS, with the certificate checked, nobody on the path swaps them.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import logging
import os
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mobieye import runtime
from mobieye.errors import ConfigError

log = logging.getLogger(__name__)

SELF_SIGNED = "self-signed"
VALID_DAYS = 825  # the longest validity Apple platforms accept for a server certificate


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path


def tls_dir() -> Path:
    return runtime.CACHE_DIR / "tls"


WILDCARDS = ("", "0.0.0.0", "::")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


def local_addresses() -> list[str]:
    """This machine's unicast interface addresses, loopback and IPv6 link-local left out: what
    a phone on the same network types in. Read from the interfaces; nothing is sent."""
    found: list[str] = []
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            try:
                ip = ipaddress.ip_address(a.address.split("%", 1)[0])
            except ValueError:
                continue
            if not (ip.is_loopback or ip.is_link_local or ip.is_multicast) and str(ip) not in found:
                found.append(str(ip))
    return found


def san_names(host: str, extra: Sequence[str] = ()) -> list[str]:
    """The names the certificate must cover: localhost, 127.0.0.1, the bind host (or, bound to
    every interface, this machine's name and addresses) and any ``extra`` names."""
    names = ["localhost", "127.0.0.1"]
    if host in WILDCARDS:
        hostname = socket.gethostname()
        mdns = [hostname, f"{hostname}.local"] if _HOSTNAME.fullmatch(hostname) else []
        wanted = [*mdns, *local_addresses()]
    else:
        wanted = [host]
    for name in [*wanted, *extra]:
        if name and name not in names:
            names.append(name)
    return names


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def certificate_covers(cert_path: Path, names: list[str]) -> bool:
    """Whether the certificate at ``cert_path`` is readable, still valid and names ``names``."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    covered = set(san)
    now = datetime.datetime.now(datetime.UTC)
    fresh = cert.not_valid_after_utc - now > datetime.timedelta(days=1)
    return fresh and all(_general_name(n) in covered for n in names)


def self_signed(
    host: str,
    directory: Path | None = None,
    extra_names: Sequence[str] = (),
    role: str = "dashboard",
) -> TlsFiles:
    """A self-signed certificate for :func:`san_names`, made once and reused while it still
    covers them (a new LAN address, say, makes a new one)."""
    directory = directory or tls_dir()
    files = TlsFiles(directory / f"{role}-cert.pem", directory / f"{role}-key.pem")
    names = san_names(host, extra_names)
    if files.key.exists() and certificate_covers(files.cert, names):
        return files
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"MobiEye {role}")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(files.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    log.info("self-signed %s certificate for %s written to %s", role, ", ".join(names), directory)
    return files


def resolve_tls(
    host: str,
    tls: str | None,
    cert: Path | None,
    key: Path | None,
    names: Sequence[str] = (),
    role: str = "dashboard",
) -> TlsFiles | None:
    """The files of ``--tls self-signed`` (also covering ``--tls-name`` names) or
    ``--tls-cert``/``--tls-key``; None: plain HTTP."""
    if tls is not None and (cert is not None or key is not None):
        raise ConfigError("--tls self-signed and --tls-cert/--tls-key exclude each other")
    if names and tls is None:
        raise ConfigError("--tls-name goes with --tls self-signed, not a given certificate")
    for name in names:
        if not (_is_ip(name) or _HOSTNAME.fullmatch(name)):
            raise ConfigError(f"--tls-name {name!r} is not a host name or IP address")
    if tls is not None:
        if tls != SELF_SIGNED:
            raise ConfigError(f"--tls takes {SELF_SIGNED!r}, not {tls!r}")
        return self_signed(host, extra_names=names, role=role)
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ConfigError("--tls-cert and --tls-key go together")
    for path in (cert, key):
        if not path.is_file():
            raise ConfigError(f"TLS file not found: {path}")
    return TlsFiles(cert, key)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def fingerprint(cert_der: bytes) -> str:
    """``sha256:`` and the certificate's SHA-256 in hex: what fleet.worker_fingerprint pins."""
    return "sha256:" + hashlib.sha256(cert_der).hexdigest()


def file_fingerprint(cert_path: Path) -> str:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return fingerprint(cert.public_bytes(serialization.Encoding.DER))


def normalise_fingerprint(value: str) -> str:
    """Accept ``sha256:ab12...``, ``AB:12:...`` (openssl's form) or bare hex."""
    hexed = value.strip().lower().removeprefix("sha256:").replace(":", "")
    if not re.fullmatch(r"[0-9a-f]{64}", hexed):
        raise ConfigError(f"{value!r} is not a SHA-256 certificate fingerprint")
    return "sha256:" + hexed
