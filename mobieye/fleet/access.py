"""How every client calls a worker (edge, dashboard proxy, demo, bench): with the worker's
token, over HTTPS checked against a CA file or a pinned certificate fingerprint, and never to an
advertised URL outside ``fleet.allowed_worker_urls``.

With a pinned fingerprint the TLS handshake itself can't check the certificate (it is
self-signed), so every response's peer certificate is compared with the pin before anything in
it is used: a swapped SDP answer from someone on the path is discarded, never applied.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

import httpx

from mobieye.config import Settings
from mobieye.credentials import bearer_header
from mobieye.errors import SignallingError
from mobieye.tls import fingerprint, normalise_fingerprint


class WorkerNotTrusted(SignallingError):
    """The worker's certificate doesn't match the pin, or its URL isn't allowed."""


@dataclass(frozen=True)
class WorkerAccess:
    token: str | None = None
    ca_file: str | None = None
    pin: str | None = None  # normalised "sha256:<hex>"

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerAccess:
        fleet = settings.fleet
        pin = normalise_fingerprint(fleet.worker_fingerprint) if fleet.worker_fingerprint else None
        return cls(settings.worker.token, fleet.ca_file, pin)

    @property
    def headers(self) -> dict[str, str]:
        return bearer_header(self.token)

    def _verify(self) -> ssl.SSLContext | bool:
        if self.pin is not None:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # checked against the pin on every response
            return context
        if self.ca_file is not None:
            return ssl.create_default_context(cafile=self.ca_file)
        return True

    def client(self, timeout: float | httpx.Timeout = 10.0) -> httpx.AsyncClient:
        """A client that sends the token; call :meth:`check` on each response it gets."""
        return httpx.AsyncClient(
            timeout=timeout, trust_env=False, headers=self.headers, verify=self._verify()
        )

    def check(self, response: httpx.Response) -> None:
        """Raise WorkerNotTrusted unless the response came from the pinned certificate."""
        if self.pin is None or response.url.scheme != "https":
            if self.pin is not None:
                raise WorkerNotTrusted(
                    f"{response.url} is plain HTTP but fleet.worker_fingerprint pins a "
                    "certificate: use the worker's https:// URL"
                )
            return
        stream: Any = response.extensions.get("network_stream")
        ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        got = fingerprint(der) if der else "no certificate"
        if got != self.pin:
            raise WorkerNotTrusted(
                f"worker at {response.url.host}:{response.url.port} presented certificate "
                f"{got}, not the pinned {self.pin} (fleet.worker_fingerprint): refused"
            )
