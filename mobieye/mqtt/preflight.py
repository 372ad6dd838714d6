"""Start-up check of a process's broker: refuse to start on wrong credentials, but only warn
when the broker is merely down (the link reconnects on its own once it is back)."""

from __future__ import annotations

import logging

from mobieye.config import MqttConfig
from mobieye.mqtt.connection import check_connect
from mobieye.mqtt.errors import BrokerError

log = logging.getLogger(__name__)

_REFUSALS = ("refused the credentials", "refused an anonymous connection", "refused the connection")


async def check_broker(cfg: MqttConfig, timeout_s: float = 5.0) -> None:
    """Raise BrokerError when the broker refuses us; log and go on when it can't be reached."""
    try:
        await check_connect(cfg, timeout_s)
    except BrokerError as exc:
        if any(r in str(exc) for r in _REFUSALS):
            raise
        log.warning("%s; going on, the link reconnects when the broker is back", exc)
