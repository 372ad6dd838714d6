"""The fleet dashboard's backend: an MQTT-fed store, token auth, a JSON API and minimal pages.

``mobieye dashboard --broker mqtt://HOST:PORT`` serves it (see ``main.run_dashboard``).
"""

from mobieye.dashboard.app import create_dashboard_app
from mobieye.dashboard.auth import generate_token
from mobieye.dashboard.store import FleetStore

__all__ = ["FleetStore", "create_dashboard_app", "generate_token"]
