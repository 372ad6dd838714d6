"""Errors of the MQTT transport; each one's message is meant for the user."""

from __future__ import annotations

from mobieye.errors import MobiEyeError


class BrokerError(MobiEyeError):
    """A broker that cannot be reached, refuses us, or cannot be started."""
