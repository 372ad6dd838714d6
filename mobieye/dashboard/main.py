"""Run the dashboard: check the broker, bind, serve, and print the URL to open once."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys

import uvicorn

from mobieye.config import Settings
from mobieye.dashboard.app import create_dashboard_app
from mobieye.dashboard.auth import TOKEN_ENV, resolve_token
from mobieye.errors import ConfigError
from mobieye.fleet.access import WorkerAccess
from mobieye.mqtt.errors import BrokerError
from mobieye.mqtt.preflight import check_broker
from mobieye.runtime import is_loopback_host
from mobieye.tls import WILDCARDS, TlsFiles, local_addresses

log = logging.getLogger(__name__)


def _bind(host: str, port: int) -> socket.socket:
    """Bind before serving, so ``--port 0`` works and the printed URL has the real port."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot resolve dashboard host {host!r}: {exc.strerror}") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def dashboard_url(host: str, port: int, token: str, https: bool = False) -> str:
    # A wildcard bind is reachable on loopback too; that is the URL a local user can click.
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    if ":" in shown:
        shown = f"[{shown}]"
    scheme = "https" if https else "http"
    return f"{scheme}://{shown}:{port}/?token={token}"


async def serve_dashboard(
    settings: Settings,
    host: str,
    port: int,
    token: str | None,
    tls: TlsFiles | None = None,
    stop: asyncio.Event | None = None,
    ready: asyncio.Event | None = None,
) -> int:
    """Serve until interrupted or until ``stop`` is set; prints the URL to open once started."""
    if settings.mqtt.broker is None:
        raise BrokerError("the dashboard needs the fleet's broker: --broker mqtt://HOST:PORT")
    secret, generated = resolve_token(token)
    await check_broker(settings.mqtt)  # wrong credentials: a clear error, not a retry loop
    app = create_dashboard_app(
        settings.mqtt, secret, fleet_cfg=settings.fleet,
        access=WorkerAccess.from_settings(settings), webrtc=settings.webrtc,
    )  # fmt: skip
    sock = _bind(host, port)
    bound_port = int(sock.getsockname()[1])
    if tls is None and not is_loopback_host(host):
        log.warning(
            "the dashboard listens on %s over plain HTTP: its token crosses the network in "
            "clear (use --tls self-signed, --tls-cert/--tls-key or a TLS proxy)",
            host,
        )
    config = uvicorn.Config(
        app,
        log_level="warning",
        ssl_certfile=str(tls.cert) if tls else None,
        ssl_keyfile=str(tls.key) if tls else None,
    )
    server = uvicorn.Server(config)

    async def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            await asyncio.sleep(0.05)
        url = dashboard_url(host, bound_port, secret, https=tls is not None)
        print(f"MobiEye dashboard: {url}", flush=True)
        if host in WILDCARDS:
            # What to type on a phone on the same network (its camera needs HTTPS).
            # A phone gets a grant for one stream, not the token (which commands the fleet).
            scheme = "https" if tls is not None else "http"
            for ip in local_addresses():
                shown = f"[{ip}]" if ":" in ip else ip
                grant = app.state.grants.create()
                print(f"  a phone's camera: {scheme}://{shown}:{bound_port}/phone?grant={grant} "
                      "(one stream, within 10 minutes; more: POST /api/phone/grants)",
                      flush=True)  # fmt: skip
        if generated:
            print(f"(token generated for this run; set {TOKEN_ENV} to keep one)", flush=True)
        if ready is not None:
            ready.set()
        if stop is not None:
            await stop.wait()
            server.should_exit = True

    announcer = asyncio.create_task(announce())
    try:
        await server.serve(sockets=[sock])
    finally:
        announcer.cancel()
        sock.close()
    return 0 if server.started else 1


def run_dashboard(
    settings: Settings, host: str, port: int, token: str | None, tls: TlsFiles | None = None
) -> int:
    """Serve until interrupted; returns the exit code."""
    try:
        return asyncio.run(serve_dashboard(settings, host, port, token, tls))
    except KeyboardInterrupt:
        print("dashboard stopped", file=sys.stderr)
        return 0
