"""MqttLink: one process's MQTT connection, kept up in the background, never fatal to its owner.

Publishing never blocks and never raises for a broker that is down: messages wait in a bounded
outbox that the link drains while connected. The drop policy:

- Non-retained messages (stats, events) sit in a FIFO of ``max_queued`` (default 1000); when it
  is full the OLDEST is dropped, counted in ``dropped`` and logged once per outage. They are
  live data: a fresh one is worth more than an old one.
- Retained messages (states) are coalesced per topic: only the newest payload of each topic is
  kept, so they never overflow the FIFO and the latest state is never lost. The link remembers
  the last retained payload of each topic and publishes it again after every reconnect, because
  a restarted broker (or one that fired our last will meanwhile) no longer holds it. An empty
  retained payload clears the topic and is forgotten once sent.

QoS 0 messages written just before a connection dies may still be lost; retained states are
covered by the re-publish, everything else is best effort by design.

Received messages wait for the handlers in a queue of ``max_incoming`` (default 10000); if the
handlers fall that far behind, the oldest are dropped (``dropped_incoming``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import aiomqtt
import paho.mqtt.client as mqtt
from aiomqtt.exceptions import MqttCodeError, MqttConnectError, MqttError
from pydantic import BaseModel

from mobieye.config import MqttConfig
from mobieye.errors import MobiEyeError
from mobieye.mqtt.connection import BrokerAddress as BrokerAddress  # re-exported
from mobieye.mqtt.connection import (
    LinkClient,
    client_logger,
    describe_error,
    drop_oldest_queue,
    error_detail,
    parse_broker_url,
    tls_context,
)
from mobieye.mqtt.connection import check_connect as check_connect  # re-exported
from mobieye.mqtt.errors import BrokerError

log = logging.getLogger("mobieye.mqtt")

T = TypeVar("T")
Handler = Callable[[str, bytes], Awaitable[None] | None]
PayloadLike = bytes | bytearray | str | BaseModel
# (topic, payload, retain), as in a last will or a final message.
Message = tuple[str, PayloadLike, bool]

_QUIET_AFTER = 3  # failed attempts logged at WARNING before the link retries quietly
_MAX_UNWRITTEN = 256  # QoS 0 messages handed to paho but not yet written to the socket
_YIELD_EVERY = 64  # messages sent between yields to the event loop


def _to_bytes(payload: PayloadLike) -> bytes:
    if isinstance(payload, BaseModel):
        return payload.model_dump_json().encode()
    if isinstance(payload, str):
        return payload.encode()
    return bytes(payload)


def _check_topic(topic: str) -> None:
    # Refused here, in the caller, rather than failing the background task over and over.
    if not topic or any(c in topic for c in "+#\0"):
        raise ValueError(f"cannot publish to MQTT topic {topic!r}")


def _check_filter(topic_filter: str) -> None:
    # paho raises on a bad filter in the background task, which would fail every session.
    levels = topic_filter.split("/")
    wild_ok = all(lvl in ("+", "#") or ("+" not in lvl and "#" not in lvl) for lvl in levels)
    if not topic_filter or "\0" in topic_filter or not wild_ok or "#" in levels[:-1]:
        raise ValueError(f"invalid MQTT topic filter {topic_filter!r}")


@dataclass(slots=True)
class _Out:
    topic: str
    payload: bytes
    qos: int
    retain: bool


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
            _check_topic(will[0])
        self.cfg = cfg
        self.client_id = client_id
        self.address = parse_broker_url(cfg.broker)
        self._tls = tls_context(cfg, self.address)
        self._will = will
        self._max_retained = max_retained_topics
        self._max_incoming = max_incoming
        self._dropped_in = 0
        self._backoff = (backoff_min_s, backoff_max_s)
        self._timeout = timeout_s

        self._queue: deque[_Out] = deque(maxlen=max_queued)
        self._retained: dict[str, _Out] = {}  # newest retained message per topic
        self._dirty: dict[str, None] = {}  # retained topics still to send (ordered set)
        self._handlers: list[tuple[str, Handler]] = []
        self._subscribed: set[str] = set()  # filters the current session has subscribed
        self._unwritten: deque[mqtt.MQTTMessageInfo] = deque()  # QoS 0 handed to paho

        self._connected = asyncio.Event()
        self._wake = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._receiver: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._final: list[_Out] = []
        self._dropped = 0
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
        return self._dropped

    @property
    def dropped_incoming(self) -> int:
        """Received messages dropped, oldest first, because handlers fell behind."""
        return self._dropped_in

    @property
    def queued(self) -> int:
        """Messages waiting to be sent (FIFO plus retained topics not yet sent)."""
        return len(self._queue) + len(self._dirty)

    async def start(self) -> None:
        """Start the background task; returns at once (wait on ``connected`` if need be)."""
        if self._task is not None and not self._task.done():
            return
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._final = []
        self._task = asyncio.create_task(self._run(), name=f"mqtt-link-{self.client_id}")

    async def stop(self, final: Sequence[Message] | None = None, timeout_s: float = 5.0) -> None:
        """Send what is queued, then ``final`` (QoS 1), then disconnect cleanly.

        A clean disconnect suppresses the last will, so a worker passes its offline state in
        ``final``. If the broker is unreachable the final messages are lost (the will, fired
        by the broker when it lost us, says the same). Never raises.
        """
        task = self._task
        if task is None or task.done():
            return
        self._final = [_Out(t, _to_bytes(p), 1, r) for t, p, r in final or ()]
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
        _check_topic(topic)
        if qos not in (0, 1, 2):
            raise ValueError(f"MQTT QoS must be 0, 1 or 2, got {qos}")
        msg = _Out(topic, _to_bytes(payload), qos, retain)
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
        _check_filter(topic_filter)
        self._handlers.append((topic_filter, handler))
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

    def _enqueue(self, msg: _Out) -> None:
        if msg.retain:
            self._retained.pop(msg.topic, None)  # re-insert: newest topics evict last
            self._retained[msg.topic] = msg
            self._dirty[msg.topic] = None
            if len(self._retained) > self._max_retained:
                oldest = next(iter(self._retained))
                del self._retained[oldest]
                self._dirty.pop(oldest, None)
                if not self._retained_evicted_logged:
                    self._retained_evicted_logged = True
                    log.warning(
                        "MQTT link %s remembers more than %d retained topics; forgetting the "
                        "oldest (clear ended streams' topics with an empty retained payload)",
                        self.client_id,
                        self._max_retained,
                    )
        else:
            if len(self._queue) == self._queue.maxlen:
                self._dropped += 1  # deque(maxlen) drops the oldest on append
                if not self._drop_logged:
                    self._drop_logged = True
                    log.warning(
                        "MQTT outbox of %s full (%d messages): dropping the oldest non-retained",
                        self.client_id,
                        self._queue.maxlen,
                    )
            self._queue.append(msg)
        self._wake.set()

    async def _drain(self, client: aiomqtt.Client) -> None:
        """Send everything queued, retained states first; on failure put the message back and
        raise."""
        sent = 0
        while True:
            if sent and sent % _YIELD_EVERY == 0:
                await asyncio.sleep(0)  # a long backlog must not starve the event loop
            if self._dirty:
                topic = next(iter(self._dirty))
                del self._dirty[topic]
                msg = self._retained[topic]
                try:
                    await self._send(client, msg)
                except MqttError:
                    if topic in self._retained:
                        self._dirty.setdefault(topic, None)
                    raise
                if not msg.payload and self._retained.get(topic) is msg:
                    del self._retained[topic]  # a cleared topic need not be re-published
            elif self._queue:
                msg = self._queue.popleft()
                try:
                    await self._send(client, msg)
                except MqttError:
                    if len(self._queue) < (self._queue.maxlen or 0):
                        self._queue.appendleft(msg)
                    raise
            else:
                self._drop_logged = False
                return
            sent += 1

    async def _send(self, client: aiomqtt.Client, msg: _Out) -> None:
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

    def _incoming_dropped(self) -> None:
        self._dropped_in += 1
        if self._dropped_in == 1 or self._dropped_in % 1000 == 0:
            log.warning(
                "MQTT link %s: handlers fall behind; dropped %d received message(s), oldest first",
                self.client_id,
                self._dropped_in,
            )

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
            queue_type=drop_oldest_queue(self._incoming_dropped),
            max_queued_incoming_messages=self._max_incoming,
            logger=client_logger(),
        )

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        attempts = 0  # consecutive failures, for the backoff
        refusals = 0  # consecutive failed connects, for quieting the log
        while not self._stopping:
            session_started = False
            connected_at = 0.0
            error: Exception
            try:
                client = self._make_client()
                async with client:
                    session_started, connected_at = True, loop.time()
                    log.info(
                        "MQTT link %s %s to %s",
                        self.client_id,
                        "reconnected" if self.last_error else "connected",
                        self.address,
                    )
                    refusals = 0
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
            if session_started and loop.time() - connected_at > self._backoff[1]:
                attempts = 0
            # else: sessions that die at once (e.g. two processes sharing a client id, each
            # kicking the other off) keep backing off instead of reconnecting twice a second.
            attempts += 1
            delay = self._delay(attempts)
            if session_started:
                message = f"lost the connection to MQTT broker {self.address}"
                if loop.time() - connected_at < 0.25:
                    message += f" right after connecting (is client id {self.client_id!r} in use?)"
                if not isinstance(error, MqttError):
                    log.error("MQTT link %s failed", self.client_id, exc_info=error)
                else:
                    detail = error_detail(error)
                    if detail != type(error).__name__:
                        message = f"{message} ({detail})"
                    log.warning("%s; reconnecting", message)
                self.last_error = message
            else:
                message = describe_error(error, self.address, self.cfg.username)
                changed = message != self.last_error
                self.last_error = message
                refusals += 1
                if refusals <= _QUIET_AFTER or changed:
                    refused = isinstance(error, MqttConnectError)
                    level = logging.ERROR if refused else logging.WARNING
                    log.log(level, "%s (retrying in %.3g s)", message, delay)
                elif refusals == _QUIET_AFTER + 1:
                    log.warning(
                        "MQTT link %s still cannot connect to %s; retrying every %.3g s or less "
                        "without logging each attempt",
                        self.client_id,
                        self.address,
                        self._backoff[1],
                    )
                else:
                    log.debug("%s (retrying in %.3g s)", message, delay)
            await asyncio.sleep(delay)

    def _delay(self, failures: int) -> float:
        low, high = self._backoff
        base = min(high, low * 2 ** (failures - 1))
        # Jitter so that a fleet cut off together does not reconnect in lockstep.
        return float(base * random.uniform(0.75, 1.25))

    async def _session(self, client: aiomqtt.Client) -> None:
        # The receiver runs first: it is what notices a dropped connection (see _guard).
        receiver = self._receiver = asyncio.create_task(self._receive(client))
        try:
            # Subscribe before reporting connected, so nothing sent after that is missed;
            # loop because subscribe() may register more filters meanwhile.
            while pending := {f for f, _ in self._handlers} - self._subscribed:
                for topic_filter in sorted(pending):
                    await self._guard(client.subscribe(topic_filter, qos=1))
                    self._subscribed.add(topic_filter)
            self._dirty = dict.fromkeys(self._retained)  # re-publish every known state
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
                await self._dispatch(message.topic.value, message.topic, raw)
        finally:
            self._wake.set()  # let the sender notice the end of the session

    async def _dispatch(self, topic: str, parsed: aiomqtt.Topic, raw: bytes) -> None:
        for topic_filter, handler in list(self._handlers):
            if not parsed.matches(topic_filter):
                continue
            try:
                result = handler(topic, raw)
                if inspect.isawaitable(result):
                    await result
            except MobiEyeError as exc:  # an expected refusal, e.g. a malformed payload
                log.warning("MQTT message on %s ignored: %s", topic, exc)
            except Exception:
                log.exception(
                    "MQTT handler for %s failed on %s; message ignored", topic_filter, topic
                )


def _in_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
