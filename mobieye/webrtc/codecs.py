"""Codec choice and encoder bitrate limits for aiortc."""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Any, Literal

import aiortc.codecs.h264
import aiortc.codecs.vpx
from aiortc import RTCPeerConnection, RTCRtpSender, RTCRtpTransceiver
from aiortc.rtcrtpparameters import RTCRtpCodecCapability

logger = logging.getLogger(__name__)

VideoCodec = Literal["vp8", "h264"]

_ENCODER_MODULES: dict[str, ModuleType] = {"vp8": aiortc.codecs.vpx, "h264": aiortc.codecs.h264}
_ENCODERS: dict[str, type] = {
    "vp8": aiortc.codecs.vpx.Vp8Encoder,
    "h264": aiortc.codecs.h264.H264Encoder,
}
_STOCK_TARGET: dict[str, property] = {c: e.__dict__["target_bitrate"] for c, e in _ENCODERS.items()}
BITRATE_HYSTERESIS = 0.3


def _is_rtx(codec: RTCRtpCodecCapability) -> bool:
    return codec.mimeType.lower().endswith("/rtx")


def _preferences(kind: str, codec: str, exclusive: bool) -> list[RTCRtpCodecCapability]:
    capabilities = RTCRtpSender.getCapabilities(kind).codecs
    wanted = f"{kind}/{codec}".lower()
    chosen = [c for c in capabilities if c.mimeType.lower() == wanted]
    if not chosen:
        available = sorted({c.mimeType for c in capabilities if not _is_rtx(c)})
        raise ValueError(f"codec {wanted!r} not supported; available: {available}")
    others = [] if exclusive else [c for c in capabilities if c not in chosen and not _is_rtx(c)]
    # Keep RTX listed: without it aiortc negotiates no retransmission and NACKs go unanswered.
    return chosen + others + [c for c in capabilities if _is_rtx(c)]


def prefer_codec(
    target: RTCRtpTransceiver | RTCPeerConnection,
    kind: str = "video",
    codec: str = "vp8",
    *,
    exclusive: bool = False,
) -> None:
    """Put ``codec`` first in the codec preferences of a transceiver (or of every transceiver of
    ``kind`` on a peer connection); with ``exclusive``, offer no other codec of that kind.

    Call before createOffer/createAnswer. aiortc's answerer keeps the offerer's order, so setting
    it on the offering side decides the codec.
    """
    transceivers = (
        [t for t in target.getTransceivers() if t.kind == kind]
        if isinstance(target, RTCPeerConnection)
        else [target]
    )
    if not transceivers:
        raise ValueError(f"no {kind} transceiver to set codec preferences on")
    preferences = _preferences(kind, codec, exclusive)
    for transceiver in transceivers:
        if transceiver.kind != kind:
            raise ValueError(f"transceiver is {transceiver.kind}, not {kind}")
        transceiver.setCodecPreferences(preferences)


def set_bitrate_limits(
    min_bps: int,
    max_bps: int,
    default_bps: int | None = None,
    codecs: tuple[VideoCodec, ...] = ("vp8", "h264"),
) -> None:
    """Set aiortc's encoder bitrate clamps (module globals: there is no public API).

    REMB feedback drives each encoder's target toward the clamp, so max_bps is effectively the
    sending bitrate on a good link. The clamps apply at the next REMB; ``default_bps`` (the
    starting bitrate, defaulting to the old default clamped into range) only to encoders created
    later.
    """
    if min_bps <= 0 or max_bps <= 0:
        raise ValueError(f"bitrates must be positive, got min={min_bps} max={max_bps}")
    if min_bps > max_bps:
        raise ValueError(f"min_bps {min_bps} exceeds max_bps {max_bps}")
    if default_bps is not None and not min_bps <= default_bps <= max_bps:
        raise ValueError(f"default_bps {default_bps} outside [{min_bps}, {max_bps}]")
    for codec in codecs:
        module = _ENCODER_MODULES[codec]
        start = default_bps if default_bps is not None else int(module.DEFAULT_BITRATE)
        # The encoders read these globals on every REMB update, so patching them is enough.
        setattr(module, "MIN_BITRATE", min_bps)  # noqa: B010
        setattr(module, "MAX_BITRATE", max_bps)  # noqa: B010
        setattr(module, "DEFAULT_BITRATE", max(min_bps, min(start, max_bps)))  # noqa: B010
        logger.info("%s bitrate limits: %d..%d bps", codec, min_bps, max_bps)


def get_bitrate_limits(codec: VideoCodec) -> tuple[int, int, int]:
    """(min, max, default) bits per second currently used by aiortc's encoder for ``codec``."""
    module = _ENCODER_MODULES[codec]
    return int(module.MIN_BITRATE), int(module.MAX_BITRATE), int(module.DEFAULT_BITRATE)


def install_bitrate_hysteresis(min_change: float = BITRATE_HYSTERESIS) -> None:
    """Make aiortc's encoders ignore small moves of their target bitrate.

    aiortc re-creates the encoder whenever REMB moves its target by over 10%: a fresh keyframe
    (many times a delta frame's size) and the encoder's start-up cost, every few seconds while
    the receiver's estimate wanders, which shows as latency spikes. Moves under ``min_change``
    (relative) are dropped; big ones (congestion) get through, and so does any move while the
    target lies outside the limits now in force (the controller changed level).
    """
    if not 0 < min_change < 1:
        raise ValueError(f"min_change must be in (0, 1), got {min_change}")
    for codec, encoder in _ENCODERS.items():
        stock = _STOCK_TARGET[codec]
        module = _ENCODER_MODULES[codec]

        def setter(
            self: Any, bitrate: int, _stock: property = stock, _module: ModuleType = module
        ) -> None:
            assert _stock.fget is not None and _stock.fset is not None
            current = int(_stock.fget(self))
            low, high = int(_module.MIN_BITRATE), int(_module.MAX_BITRATE)
            wanted = max(low, min(int(bitrate), high))
            if not low <= current <= high or abs(wanted - current) >= min_change * current:
                _stock.fset(self, bitrate)

        setattr(encoder, "target_bitrate", property(stock.fget, setter))  # noqa: B010
    logger.info(
        "encoder bitrate moves under %.0f%% ignored (no encoder restarts)", 100 * min_change
    )


def uninstall_bitrate_hysteresis() -> None:
    for codec, encoder in _ENCODERS.items():
        setattr(encoder, "target_bitrate", _STOCK_TARGET[codec])  # noqa: B010
