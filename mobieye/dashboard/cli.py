"""``mobieye dashboard``'s flags and start (the app itself: mobieye.dashboard.app)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mobieye.cli_flags import EPILOG, broker_flag, common
from mobieye.config import Settings


def add_dashboard_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dashboard = sub.add_parser(
        "dashboard",
        help="serve a web dashboard of the fleet: workers, streams, events, commands",
        description="Follow the fleet over MQTT and serve its picture (JSON API and pages) on "
        "HTTP. Every request needs the token: --token, else $MOBIEYE_DASHBOARD_TOKEN, else one "
        "generated and printed in the URL to open.",
        epilog=EPILOG,
    )
    common(dashboard)
    # Its own dest: --host must not land in worker.host through overrides_from.
    dashboard.add_argument(
        "--host",
        dest="dashboard_host",
        metavar="HOST",
        default="127.0.0.1",
        help="bind address (default 127.0.0.1)",
    )
    dashboard.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080)")
    dashboard.add_argument("--token", help="access token (default: $MOBIEYE_DASHBOARD_TOKEN)")
    dashboard.add_argument(
        "--tls",
        choices=["self-signed"],
        help="serve HTTPS with a self-signed certificate (made once, kept in the cache dir)",
    )
    dashboard.add_argument("--tls-cert", type=Path, help="serve HTTPS with this certificate (PEM)")
    dashboard.add_argument("--tls-key", type=Path, help="private key of --tls-cert (PEM)")
    dashboard.add_argument(
        "--tls-name",
        action="append",
        default=[],
        metavar="NAME",
        help="another host name or IP the self-signed certificate must cover (repeatable); "
        "bound to 0.0.0.0 it already covers this machine's name and addresses",
    )
    broker_flag(dashboard)


def run_dashboard_command(settings: Settings, args: argparse.Namespace) -> int:
    from mobieye.dashboard.main import run_dashboard
    from mobieye.tls import resolve_tls

    tls = resolve_tls(args.dashboard_host, args.tls, args.tls_cert, args.tls_key, args.tls_name)
    return run_dashboard(settings, args.dashboard_host, args.port, args.token, tls)
