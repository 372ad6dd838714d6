"""Errors of the fleet's topics and payloads; each one's message is meant for the user."""

from __future__ import annotations

from mobieye.errors import MobiEyeError


class TopicError(MobiEyeError, ValueError):
    """An id or prefix that cannot be part of a MobiEye topic."""


class PayloadError(MobiEyeError):
    """A message whose payload is not what its topic promises."""

    def __init__(self, message: str, topic: str | None = None, problems: list[str] | None = None):
        super().__init__(message)
        self.topic = topic
        self.problems = problems or []
