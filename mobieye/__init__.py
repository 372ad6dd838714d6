"""MobiEye: real-time object detection offloaded over WebRTC.

The cloud runs a heavy detector on keyframes only and tracks every frame in between; the edge
measures the latency of every frame.
"""

__version__ = "0.1.0"
