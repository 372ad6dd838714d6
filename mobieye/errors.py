"""Errors that carry a message meant for the user: the CLI prints them without a traceback."""

from __future__ import annotations

import reprlib
from collections.abc import Mapping, Sequence
from typing import Any, Protocol


class _HasErrors(Protocol):
    """pydantic's ValidationError, FastAPI's RequestValidationError."""

    def errors(self) -> Sequence[Mapping[str, Any]]: ...


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


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict = 2, 4, 4
_REPR.maxstring = _REPR.maxother = 80
MAX_SHOWN = 200


def _shown(value: Any) -> str:
    text = _REPR.repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


def validation_problems(exc: _HasErrors, with_input: bool = False) -> list[str]:
    """Each problem of a pydantic error as ``where: what`` (and what was given, if asked):
    the one wording of bad input everywhere (config, messages, payloads, HTTP bodies)."""
    out = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        text = f"{where}: {err['msg']}" if where else err["msg"]
        if with_input and "input" in err:
            text += f" (got {_shown(err['input'])})"  # bounded: YAML aliases expand a lot
        out.append(text)
    return out
