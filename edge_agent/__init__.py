"""The edge side: captures frames, streams them over WebRTC, measures every frame's latency."""
