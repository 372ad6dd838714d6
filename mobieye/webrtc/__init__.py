"""aiortc tuning for MobiEye: loopback-confined ICE, low-latency jitter buffer, exact frame
timestamps, codec choice. Every patch is explicit: call the ones a process needs at startup,
before it creates peer connections."""

from .codecs import (
    VideoCodec,
    get_bitrate_limits,
    install_bitrate_hysteresis,
    prefer_codec,
    set_bitrate_limits,
    uninstall_bitrate_hysteresis,
)
from .ice import (
    IceServerLike,
    IceServerSpec,
    confine_to_loopback,
    filter_sdp_candidates,
    is_confined_to_loopback,
    rtc_configuration,
)
from .jitter import (
    LowLatencyJitterBuffer,
    install_low_latency_jitter_buffer,
    jitter_buffer_of,
    low_latency_jitter_buffer_installed,
    uninstall_low_latency_jitter_buffer,
)
from .keyframes import is_h264_keyframe, is_keyframe, is_vp8_keyframe
from .timestamps import (
    AbsoluteTimestampMapper,
    install_receiver_absolute_timestamps,
    install_sender_zero_timestamp_origin,
    uninstall_receiver_absolute_timestamps,
    uninstall_sender_zero_timestamp_origin,
)

__all__ = [
    "AbsoluteTimestampMapper",
    "IceServerLike",
    "IceServerSpec",
    "LowLatencyJitterBuffer",
    "VideoCodec",
    "confine_to_loopback",
    "filter_sdp_candidates",
    "get_bitrate_limits",
    "install_bitrate_hysteresis",
    "install_low_latency_jitter_buffer",
    "install_receiver_absolute_timestamps",
    "install_sender_zero_timestamp_origin",
    "is_confined_to_loopback",
    "is_h264_keyframe",
    "is_keyframe",
    "is_vp8_keyframe",
    "jitter_buffer_of",
    "low_latency_jitter_buffer_installed",
    "prefer_codec",
    "rtc_configuration",
    "set_bitrate_limits",
    "uninstall_bitrate_hysteresis",
    "uninstall_low_latency_jitter_buffer",
    "uninstall_receiver_absolute_timestamps",
    "uninstall_sender_zero_timestamp_origin",
]
