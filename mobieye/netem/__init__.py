"""Network emulation: edge and worker as separate hosts over an emulated link.

``EmulatedLink`` (needs root) puts each side in its own network namespace, joined by a
user-space wire that applies a ``LinkProfile``'s delay, jitter, loss and rate. The
``loopback`` profile means no emulation: both sides on 127.0.0.1.
"""

from mobieye.netem.hosts import (
    EDGE_IP,
    WORKER_IP,
    EmulatedLink,
    LinkStats,
    check_can_emulate,
    cleanup_stale_namespaces,
)
from mobieye.netem.profiles import LOOPBACK, PROFILES, LinkProfile, get_profile
from mobieye.netem.shaper import DirectionStats, Shaper

__all__ = [
    "EDGE_IP",
    "LOOPBACK",
    "PROFILES",
    "WORKER_IP",
    "DirectionStats",
    "EmulatedLink",
    "LinkProfile",
    "LinkStats",
    "Shaper",
    "check_can_emulate",
    "cleanup_stale_namespaces",
    "get_profile",
]
