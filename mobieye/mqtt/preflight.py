"""Start-up check of a process's broker: refuse to start on wrong credentials, but only warn
when the broker is merely down (the link reconnects on its own once it is back)."""

from __future__ import annotations

import logging

from mobieye.config import MqttConfig
from mobieye.mqtt.connection import check_connect
from mobieye.mqtt.errors import BrokerError

log = logging.getLogger(__name__)

SHARED_WORKER_ACCOUNT = "worker"  # docker/mosquitto.acl: the account scaled replicas share


def worker_account_problem(cfg: MqttConfig, worker_id: str) -> str | None:
    """Why the shipped ACL would drop this worker's state, if it would: an account of its own
    must be named like the worker (the broker drops a refused publish without a word)."""
    user = cfg.username
    if user is None or user in (SHARED_WORKER_ACCOUNT, worker_id):
        return None
    return (
        f"mqtt.username {user!r} is neither worker.id {worker_id!r} nor the shared "
        f"{SHARED_WORKER_ACCOUNT!r} account: under docker/mosquitto.acl the broker drops this "
        "worker's state, and the fleet never sees it (set MOBIEYE_WORKER__ID to the username)"
    )


_REFUSALS = ("refused the credentials", "refused an anonymous connection", "refused the connection")


async def check_broker(cfg: MqttConfig, timeout_s: float = 5.0) -> None:
    """Raise BrokerError when the broker refuses us; log and go on when it can't be reached."""
    try:
        await check_connect(cfg, timeout_s)
    except BrokerError as exc:
        if any(r in str(exc) for r in _REFUSALS):
            raise
        log.warning("%s; going on, the link reconnects when the broker is back", exc)
