"""The cloud side: receives WebRTC video, detects on keyframes, tracks every frame."""
