"""MqttLink: one process's MQTT connection, kept up in the background, never fatal to its owner.

Publishing never blocks and never raises for a broker that is down: messages wait in a bounded
outbox (mobieye/mqtt/outbox.py, which states the drop policy: the oldest live message goes
first, the newest state of every topic is kept and re-sent after each reconnect) that the link
drains while connected. Drops are counted in ``dropped`` and logged once per outage.

QoS 0 messages written just before a connection dies may still be lost; retained states are
covered by the re-publish, everything else is best effort by design.

Received messages wait for the handlers in a queue of ``max_incoming`` (default 10000); if the
handlers fall that far behind, the oldest are dropped (``dropped_incoming``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Sequence
from typing import TypeVar

import aiomqtt
import paho.mqtt.client as mqtt
from aiomqtt.exceptions import MqttCodeError, MqttConnectError, MqttError

from mobieye.config import MqttConfig
from mobieye.mqtt.connection import (
    LinkClient,
    client_logger,
    describe_error,
    drop_oldest_queue,
    error_detail,
    parse_broker_url,
    tls_context,
)
from mobieye.mqtt.errors import BrokerError
from mobieye.mqtt.handlers import Handler, Handlers
from mobieye.mqtt.outbox import Outbox, Outgoing, PayloadLike, check_topic
from mobieye.mqtt.reconnect import Reconnect

log = logging.getLogger("mobieye.mqtt")

T = TypeVar("T")
# (topic, payload, retain), as in a last will or a final message.
Final = tuple[str, PayloadLike, bool]

_MAX_UNWRITTEN = 256  # QoS 0 messages handed to paho but not yet written to the socket
_YIELD_EVERY = 64  # messages sent between yields to the event loop


class MqttLink:
    """A background MQTT connection with reconnects, a bounded outbox and handler dispatch.

    Call ``publish`` and ``subscribe`` at any time, before ``start`` too; call them from the
    event loop's thread (``publish`` also from other threads). Handlers run in the link's task,
    one message at a time and in order, so they should be quick; their exceptions are logged
    and ignored.
    """

    def __init__(
        self,
        cfg: MqttConfig,
        client_id: str,
        will: tuple[str, bytes, bool] | None = None,
        *,
        max_queued: int = 1000,
        max_retained_topics: int = 10_000,
        max_incoming: int = 10_000,
        backoff_min_s: float = 0.5,
        backoff_max_s: float = 10.0,
        timeout_s: float = 10.0,
    ) -> None:
        if cfg.broker is None:
            raise BrokerError("no MQTT broker configured (set mqtt.broker to mqtt://HOST:PORT)")
        if will is not None:
            check_topic(will[0])
        self.cfg = cfg
        self.client_id = client_id
        self.address = parse_broker_url(cfg.broker)
        self._tls = tls_context(cfg, self.address)
        self._will = will
        self._max_incoming = max_incoming
        self._reconnect = Reconnect(backoff_min_s, backoff_max_s)
        self._timeout = timeout_s

        self._outbox = Outbox(max_queued, max_retained_topics)
        self._handlers = Handlers(client_id)
        self._subscribed: set[str] = set()  # filters the current session has subscribed
        self._unwritten: deque[mqtt.MQTTMessageInfo] = deque()  # QoS 0 handed to paho

        self._connected = asyncio.Event()
        self._wake = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._receiver: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._final: list[Outgoing] = []
        self._drop_logged = False
        self._retained_evicted_logged = False
        self.last_error: str | None = None
        """Why the link is down (or why it last failed); None while connected."""

    # -- owner API -------------------------------------------------------------------------

    @property
    def connected(self) -> asyncio.Event:
        """Set while connected and subscribed; wait on it, never set or clear it."""
        return self._connected

    @property
    def dropped(self) -> int:
        """Non-retained messages dropped because the outbox was full."""
        return self._outbox.dropped

    @property
    def dropped_incoming(self) -> int:
        """Received messages dropped, oldest first, because handlers fell behind."""
        return self._handlers.dropped

    @property
    def queued(self) -> int:
        """Messages waiting to be sent (FIFO plus retained topics not yet sent)."""
        return len(self._outbox)

    async def start(self) -> None:
        """Start the background task; returns at once (wait on ``connected`` if need be)."""
        if self._task is not None and not self._task.done():
            return
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._final = []
        self._task = asyncio.create_task(self._run(), name=f"mqtt-link-{self.client_id}")

    async def stop(self, final: Sequence[Final] | None = None, timeout_s: float = 5.0) -> None:
        """Send what is queued, then ``final`` (QoS 1), then disconnect cleanly.

        A clean disconnect suppresses the last will, so a worker passes its offline state in
        ``final``. If the broker is unreachable the final messages are lost (the will, fired
        by the broker when it lost us, says the same). Never raises.
        """
        task = self._task
        if task is None or task.done():
            return
        self._final = [Outgoing.make(t, p, 1, r) for t, p, r in final or ()]
        self._stopping = True
        self._wake.set()
        if not self._connected.is_set():
            # Between attempts (or mid-attempt): nothing could be sent anyway.
            task.cancel()
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
        if not done:
            log.warning("MQTT link %s did not stop within %g s; cut off", self.client_id, timeout_s)
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)
        self._connected.clear()

    def publish(self, topic: str, payload: PayloadLike, retain: bool = False, qos: int = 0) -> None:
        """Queue a message; never blocks, never raises for the broker's state."""
        msg = Outgoing.make(topic, payload, qos, retain)
        loop = self._loop
        if loop is not None and not _in_loop(loop):
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to send it
                loop.call_soon_threadsafe(self._enqueue, msg)
        else:
            self._enqueue(msg)

    async def subscribe(self, topic_filter: str, handler: Handler) -> None:
        """Register ``handler`` for ``topic_filter``, now and after every reconnect.

        If connected, returns once the broker acknowledged the subscription; otherwise at
        once (the link subscribes before it reports itself connected).
        """
        self._handlers.add(topic_filter, handler)
        client = self._client
        if client is None or not self._connected.is_set() or topic_filter in self._subscribed:
            return
        try:
            await self._guard(client.subscribe(topic_filter, qos=1))
            self._subscribed.add(topic_filter)
        except MqttError as exc:
            # The session is ending; the next one subscribes every filter.
            log.debug("MQTT subscribe to %s deferred: %s", topic_filter, exc)

    # -- outbox ----------------------------------------------------------------------------

    def _enqueue(self, msg: Outgoing) -> None:
        forgotten = self._outbox.forgotten
        if not self._outbox.put(msg):
            if self._outbox.forgotten > forgotten and not self._retained_evicted_logged:
                self._retained_evicted_logged = True
                log.warning(
                    "MQTT link %s remembers more than %d retained topics; forgetting the "
                    "oldest (clear ended streams' topics with an empty retained payload)",
                    self.client_id,
                    self._outbox.max_retained,
                )
            elif self._outbox.forgotten == forgotten and not self._drop_logged:
                self._drop_logged = True
                log.warning(
                    "MQTT outbox of %s full (%d messages): dropping the oldest non-retained",
                    self.client_id,
                    self._outbox.max_queued,
                )
        self._wake.set()

    async def _drain(self, client: aiomqtt.Client) -> None:
        """Send everything queued, retained states first; on failure put the message back and
        raise."""
        sent = 0
        while (msg := self._outbox.next()) is not None:
            if sent and sent % _YIELD_EVERY == 0:
                await asyncio.sleep(0)  # a long backlog must not starve the event loop
            try:
                await self._send(client, msg)
            except MqttError:
                self._outbox.failed(msg)
                raise
            self._outbox.sent(msg)
            sent += 1
        self._drop_logged = False

    async def _send(self, client: aiomqtt.Client, msg: Outgoing) -> None:
        if msg.qos:
            await self._guard(
                client.publish(msg.topic, msg.payload, qos=msg.qos, retain=msg.retain)
            )
            return
        # QoS 0 goes straight to paho: aiomqtt's publish waits a loop turn per message for
        # the write, which caps a link at a few thousand messages a second of loop time.
        # Backpressure instead: at most _MAX_UNWRITTEN messages waiting for the socket.
        while True:
            while self._unwritten and self._unwritten[0].is_published():
                self._unwritten.popleft()
            if len(self._unwritten) < _MAX_UNWRITTEN:
                break
            receiver = self._receiver
            if receiver is not None and receiver.done():
                raise MqttError("connection lost")
            await asyncio.sleep(0.005)
        info = client._client.publish(msg.topic, msg.payload, 0, msg.retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise MqttCodeError(info.rc, "Could not publish message")
        self._unwritten.append(info)

    async def _guard(self, call: Awaitable[T]) -> T:
        """Await an aiomqtt call, but give up as soon as the connection is known to be lost.

        aiomqtt does not fail pending calls on disconnect: a publish written to a dead socket
        would wait out the full timeout (10 s) before the link could reconnect.
        """
        task = asyncio.ensure_future(call)
        receiver = self._receiver
        try:
            if receiver is not None:
                await asyncio.wait({task, receiver}, return_when=asyncio.FIRST_COMPLETED)
            else:
                await task
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if task.cancelled():
            ended = receiver.exception() if receiver is not None and receiver.done() else None
            if isinstance(ended, Exception):
                raise ended
            raise MqttError("connection lost")
        return task.result()

    # -- background task -------------------------------------------------------------------

    def _make_client(self) -> aiomqtt.Client:
        will = None
        if self._will is not None:
            topic, payload, retain = self._will
            will = aiomqtt.Will(topic, payload, qos=1, retain=retain)
        return LinkClient(
            self.address.host,
            self.address.port,
            username=self.cfg.username,
            password=self.cfg.password,
            identifier=self.client_id,
            will=will,
            keepalive=self.cfg.keepalive_s,
            timeout=self._timeout,
            tls_context=self._tls,
            queue_type=drop_oldest_queue(self._handlers.note_dropped),
            max_queued_incoming_messages=self._max_incoming,
            logger=client_logger(),
        )

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            connected_at: float | None = None
            error: Exception
            try:
                client = self._make_client()
                async with client:
                    connected_at = loop.time()
                    again = "reconnected" if self.last_error else "connected"
                    log.info("MQTT link %s %s to %s", self.client_id, again, self.address)
                    self._reconnect.connected()
                    self.last_error = None
                    self._client = client
                    await self._session(client)
                return  # clean stop: the context manager sent DISCONNECT
            except Exception as exc:  # any failure: report it and try again
                error = exc
            finally:
                self._client = None
                self._subscribed.clear()
                self._connected.clear()
            if self._stopping:
                return
            lasted = None if connected_at is None else loop.time() - connected_at
            delay = self._reconnect.failed(lasted)
            if lasted is not None:
                self.last_error = self._session_lost(error, lasted)
            else:
                message = describe_error(error, self.address, self.cfg.username)
                self.last_error = message
                level, quiet = self._reconnect.refusal_level(
                    message, isinstance(error, MqttConnectError)
                )
                if quiet:
                    log.warning("MQTT link %s still cannot connect to %s; retrying every %.3g s "
                                "or less without logging each attempt", self.client_id,
                                self.address, self._reconnect.high_s)  # fmt: skip
                else:
                    log.log(level, "%s (retrying in %.3g s)", message, delay)
            await asyncio.sleep(delay)

    def _session_lost(self, error: Exception, lasted_s: float) -> str:
        message = f"lost the connection to MQTT broker {self.address}"
        if lasted_s < 0.25:
            message += f" right after connecting (is client id {self.client_id!r} in use?)"
        if not isinstance(error, MqttError):
            log.error("MQTT link %s failed", self.client_id, exc_info=error)
        else:
            detail = error_detail(error)
            if detail != type(error).__name__:
                message = f"{message} ({detail})"
            log.warning("%s; reconnecting", message)
        return message

    async def _session(self, client: aiomqtt.Client) -> None:
        # The receiver runs first: it is what notices a dropped connection (see _guard).
        receiver = self._receiver = asyncio.create_task(self._receive(client))
        try:
            # Subscribe before reporting connected, so nothing sent after that is missed;
            # loop because subscribe() may register more filters meanwhile.
            while pending := self._handlers.filters - self._subscribed:
                for topic_filter in sorted(pending):
                    await self._guard(client.subscribe(topic_filter, qos=1))
                    self._subscribed.add(topic_filter)
            self._outbox.reconnected()  # re-publish every known state
            self._unwritten.clear()
            self._connected.set()
            while True:
                self._wake.clear()
                await self._drain(client)
                if self._stopping:
                    for m in self._final:
                        await self._guard(
                            client.publish(m.topic, m.payload, qos=m.qos, retain=m.retain)
                        )
                    return
                await self._wake.wait()
                if receiver.done():
                    receiver.result()  # raises why the connection ended
                    raise MqttError("message stream ended")
        finally:
            self._receiver = None
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await receiver

    async def _receive(self, client: aiomqtt.Client) -> None:
        try:
            async for message in client.messages:
                payload = message.payload
                if isinstance(payload, (bytes, bytearray)):
                    raw = bytes(payload)
                else:
                    raw = b"" if payload is None else str(payload).encode()
                await self._handlers.dispatch(message.topic, raw)
        finally:
            self._wake.set()  # let the sender notice the end of the session


def _in_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
