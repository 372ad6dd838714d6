"""Connecting to a broker: its address, TLS, one-line error messages and aiomqtt adaptations.

``check_connect`` is for CLIs that want to fail fast at start; ``MqttLink`` (client.py) uses the
rest for its background connection.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self, cast
from urllib.parse import urlsplit

import aiomqtt
from aiomqtt.exceptions import MqttConnectError, MqttError
from paho.mqtt.reasoncodes import ReasonCode

from mobieye.config import MqttConfig
from mobieye.mqtt.errors import BrokerError

# CONNACK codes that mean "who are you?": MQTT 3.1.1 4/5 and their MQTT 5 forms.
_AUTH_CODES = {4, 5, 134, 135}


@dataclass(frozen=True)
class BrokerAddress:
    tls: bool
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_broker_url(url: str) -> BrokerAddress:
    """``mqtt://HOST[:PORT]`` (default 1883) or ``mqtts://HOST[:PORT]`` (default 8883)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BrokerError(f"invalid MQTT broker URL {url!r}: {exc}") from None
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise BrokerError(f"invalid MQTT broker URL {url!r}: expected mqtt://HOST:PORT")
    tls = parts.scheme == "mqtts"
    return BrokerAddress(tls, parts.hostname, port or (8883 if tls else 1883))


def tls_context(cfg: MqttConfig, addr: BrokerAddress) -> ssl.SSLContext | None:
    if not addr.tls:
        return None
    try:
        return ssl.create_default_context(cafile=cfg.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise BrokerError(f"cannot load the MQTT CA file {cfg.ca_file}: {exc}") from None


def describe_error(exc: BaseException, addr: BrokerAddress, username: str | None) -> str:
    """One line for the user: why the link to ``addr`` failed or dropped."""
    if isinstance(exc, MqttConnectError):
        rc = exc.rc
        code = rc.value if isinstance(rc, ReasonCode) else rc
        if code in _AUTH_CODES:
            if username:
                return f"MQTT broker {addr} refused the credentials of user '{username}'"
            return (
                f"MQTT broker {addr} refused an anonymous connection "
                "(set mqtt.username and mqtt.password)"
            )
        return f"MQTT broker {addr} refused the connection: {rc}"
    text = error_detail(exc)
    if "timed out" in text.lower():
        return f"MQTT broker {addr} did not answer in time"
    return f"cannot connect to MQTT broker {addr}: {text}"


# aiomqtt and paho wrap a lost connection in these; they add words, not information.
_GENERIC = (
    "Disconnected during message iteration",
    "Unexpected disconnection",
    "Unspecified error",
    "not currently connected",
)


def error_detail(exc: BaseException) -> str:
    """The informative parts of an exception and its causes, joined by ': '."""
    parts: list[str] = []
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        text = str(cur)
        if text and not any(g in text for g in _GENERIC) and text not in parts:
            parts.append(text)
        cur = cur.__cause__ or cur.__context__
    return ": ".join(parts) or type(exc).__name__


class _PahoLog(logging.LoggerAdapter[logging.Logger]):
    """paho's own lines (e.g. ERROR "failed to receive on socket" on every lost connection)
    demoted to DEBUG: the link reports each loss or refusal once, itself. aiomqtt's own
    warnings keep their level."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        super().log(min(level, logging.DEBUG), msg, *args, **kwargs)

    def warning(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self.logger.warning(msg, *args, **kwargs)

    def exception(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self.logger.exception(msg, *args, **kwargs)


def client_logger() -> logging.Logger:
    # aiomqtt wants a Logger; the adapter provides every method aiomqtt and paho call.
    return cast(logging.Logger, _PahoLog(logging.getLogger("mobieye.mqtt.paho")))


class LinkClient(aiomqtt.Client):
    """aiomqtt's Client without one race (aiomqtt 2.5): a disconnect that lands between the
    CONNACK and the end of ``__aenter__`` (e.g. another process connecting with our client id)
    is forgotten when ``__aenter__`` resets its future, leaving a dead client that looks
    connected. Carry it over, so the receiver sees the loss at once."""

    async def __aenter__(self) -> Self:
        first = self._disconnected
        await super().__aenter__()
        if self._disconnected is not first and first.done() and not first.cancelled():
            exc = first.exception()  # retrieving it also silences "never retrieved"
            self._disconnected.set_exception(exc or MqttError("disconnected while connecting"))
        return self


def drop_oldest_queue(on_drop: Callable[[], None]) -> type[asyncio.Queue[aiomqtt.Message]]:
    """aiomqtt's incoming queue, but full means drop the OLDEST (aiomqtt drops the newest and
    logs a warning per message)."""

    class DropOldest(asyncio.Queue[aiomqtt.Message]):
        def put_nowait(self, item: aiomqtt.Message) -> None:
            if self.full():
                self.get_nowait()
                on_drop()
            super().put_nowait(item)

    return DropOldest


async def check_connect(
    cfg: MqttConfig, timeout_s: float = 5.0, client_id: str | None = None
) -> None:
    """Connect once and disconnect; raise BrokerError saying why not. For fail-fast CLIs."""
    if cfg.broker is None:
        raise BrokerError("no MQTT broker configured (set mqtt.broker to mqtt://HOST:PORT)")
    addr = parse_broker_url(cfg.broker)
    client = aiomqtt.Client(
        addr.host,
        addr.port,
        username=cfg.username,
        password=cfg.password,
        identifier=client_id,
        keepalive=cfg.keepalive_s,
        timeout=timeout_s,
        tls_context=tls_context(cfg, addr),
        logger=client_logger(),
    )
    # paho's own socket timeout, so the executor thread that connects ends in time too.
    client._client.connect_timeout = timeout_s
    try:
        async with asyncio.timeout(timeout_s + 1.0):
            async with client:
                pass
    except TimeoutError:
        raise BrokerError(f"MQTT broker {addr} did not answer within {timeout_s:g} s") from None
    except MqttError as exc:
        raise BrokerError(describe_error(exc, addr, cfg.username)) from None
