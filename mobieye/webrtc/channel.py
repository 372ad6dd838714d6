"""A data channel to a peer that may be hostile, both ways.

Sending: every send is guarded. A peer that advertised a max-message-size below what we send,
that stops reading (its backlog, ``bufferedAmount``, passes a cap), or whose channel raises, is
judged faulty once: ``on_fault(reason, detail)`` is called and nothing more is sent to it. The
caller closes that peer; its own loops never see an exception from a send.

Receiving: :class:`InboundLimit` is a per-peer cap on message size and rate (a token bucket),
pure of WebRTC: a peer over it is flooding.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiortc import RTCDataChannel

log = logging.getLogger(__name__)

DEFAULT_MAX_BUFFERED_BYTES = 1024 * 1024


def remote_max_message_size(channel: RTCDataChannel) -> int | None:
    """What the peer's SDP said it accepts (``a=max-message-size``); None: no limit known."""
    # aiortc keeps it on the SCTP transport without a public accessor.
    size = getattr(channel.transport, "_remote_max_message_size", None)
    return size if isinstance(size, int) and size > 0 else None


class PeerChannel:
    def __init__(
        self,
        channel: RTCDataChannel,
        on_fault: Callable[[str, str], None],
        max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES,
    ) -> None:
        self.channel = channel
        self.on_fault = on_fault
        self.max_buffered_bytes = max_buffered_bytes
        self.fault: str | None = None
        self.sent = 0

    @property
    def open(self) -> bool:
        return self.fault is None and self.channel.readyState == "open"

    def send(self, text: str | bytes) -> bool:
        """Send if the channel is open and the peer is sound; False when nothing was sent."""
        if not self.open:
            return False
        limit = remote_max_message_size(self.channel)
        # Measured in UTF-8 bytes only when it could matter (at most 4 per character).
        if isinstance(text, bytes):
            size = len(text)
        else:
            size = len(text.encode()) if limit is not None and 4 * len(text) > limit else 0
        if limit is not None and size > limit:
            self._faulty("peer_small_messages", f"it accepts messages of {limit} bytes at "
                         f"most (a=max-message-size); this one is {size}")  # fmt: skip
            return False
        backlog = self.channel.bufferedAmount
        if backlog > self.max_buffered_bytes:
            self._faulty("peer_slow", f"it left {backlog} bytes unread (limit "
                         f"{self.max_buffered_bytes})")  # fmt: skip
            return False
        try:
            self.channel.send(text)
        except Exception as exc:  # aiortc raises assorted errors on a channel going away
            self._faulty("peer_failed", f"send failed: {exc!r}")
            return False
        self.sent += 1
        return True

    def _faulty(self, reason: str, detail: str) -> None:
        if self.fault is None:
            self.fault = reason
            self.on_fault(reason, detail)


@dataclass
class InboundLimit:
    """Per-peer caps on what it sends: ``check`` returns why a message is refused, or None.

    Size is checked before anything is parsed. Rate is a token bucket of ``burst`` messages
    refilled at ``per_s``: bursts at connect (hello, first reports) pass, a sustained flood
    does not."""

    max_bytes: int
    per_s: float
    burst: float = 0.0
    clock: Callable[[], float] = time.monotonic
    _tokens: float = field(init=False)
    _last: float = field(init=False)

    def __post_init__(self) -> None:
        self.burst = self.burst or max(1.0, 2 * self.per_s)
        self._tokens = self.burst
        self._last = self.clock()

    def check(self, size: int) -> str | None:
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.per_s)
        self._last = now
        if size > self.max_bytes:
            return f"message of {size} bytes exceeds the {self.max_bytes}-byte limit"
        if self._tokens < 1:
            return f"more than {self.per_s:g} messages a second"
        self._tokens -= 1
        return None
