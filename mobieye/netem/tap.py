"""Opening Linux TAP devices (raw Ethernet frames through a file descriptor)."""

from __future__ import annotations

import fcntl
import os
import struct

TUN_DEVICE = "/dev/net/tun"
# From <linux/if_tun.h>.
TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFNAMSIZ = 16


def open_tap(name: str) -> int:
    """Create the non-persistent TAP interface ``name`` and return its non-blocking fd.

    The interface lives exactly as long as the fd (and its inherited copies): closing it removes
    the interface from whatever namespace it was moved to. IFF_NO_PI gives bare Ethernet
    frames; without IFF_VNET_HDR the kernel finishes checksums and segments GSO packets before
    handing them over, so every read is one ordinary frame no larger than the MTU.
    """
    encoded = name.encode()
    if not encoded or len(encoded) >= IFNAMSIZ:
        raise ValueError(f"interface name {name!r} must be 1..{IFNAMSIZ - 1} bytes")
    fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", encoded, IFF_TAP | IFF_NO_PI))
        os.set_blocking(fd, False)
    except BaseException:
        os.close(fd)
        raise
    return fd
