"""Errors that carry a message meant for the user: the CLI prints them without a traceback."""


class MobiEyeError(Exception):
    """Base class: str(exc) says what is wrong and, where possible, what to do."""


class ConfigError(MobiEyeError):
    """A bad configuration value or file."""


class ModelError(MobiEyeError):
    """A detector that is missing, unloadable or unknown."""


class SourceError(MobiEyeError):
    """A video source that cannot be opened or read."""


class MessageError(MobiEyeError):
    """A malformed or unknown data-channel message."""


class SignallingError(MobiEyeError):
    """A malformed offer, an unreachable worker or a refused stream."""
