"""HTTPS for the dashboard: a given certificate, or a self-signed one kept in the cache dir.

A phone's browser gives ``getUserMedia`` (the /phone page) only to a secure context, so a
dashboard opened from another device must be served over HTTPS.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
from dataclasses import dataclass
from pathlib import Path

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


def san_names(host: str) -> list[str]:
    """The names the certificate must cover: the bind host, localhost and 127.0.0.1."""
    names = ["localhost", "127.0.0.1"]
    if host and host not in ("0.0.0.0", "::") and host not in names:
        names.append(host)
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


def self_signed(host: str, directory: Path | None = None) -> TlsFiles:
    """A self-signed certificate for ``host`` (plus localhost, 127.0.0.1), made once and reused."""
    directory = directory or tls_dir()
    files = TlsFiles(directory / "dashboard-cert.pem", directory / "dashboard-key.pem")
    names = san_names(host)
    if files.key.exists() and certificate_covers(files.cert, names):
        return files
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "MobiEye dashboard")])
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
    log.info("self-signed dashboard certificate for %s written to %s", ", ".join(names), directory)
    return files


def resolve_tls(host: str, tls: str | None, cert: Path | None, key: Path | None) -> TlsFiles | None:
    """The files of ``--tls self-signed`` or ``--tls-cert``/``--tls-key``; None: plain HTTP."""
    if tls is not None and (cert is not None or key is not None):
        raise ConfigError("--tls self-signed and --tls-cert/--tls-key exclude each other")
    if tls is not None:
        if tls != SELF_SIGNED:
            raise ConfigError(f"--tls takes {SELF_SIGNED!r}, not {tls!r}")
        return self_signed(host)
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ConfigError("--tls-cert and --tls-key go together")
    for path in (cert, key):
        if not path.is_file():
            raise ConfigError(f"TLS file not found: {path}")
    return TlsFiles(cert, key)
