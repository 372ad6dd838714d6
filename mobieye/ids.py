"""Stream and worker ids: one pattern, safe as an MQTT topic level, in a URL and in a label."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field

ID_PATTERN = r"^[A-Za-z0-9_.:-]+$"
MAX_ID_LENGTH = 128
_ID = re.compile(r"[A-Za-z0-9_.:-]+")  # fullmatch: "$" would let a trailing newline through

Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)]
"""A validated id field for pydantic models."""


def is_valid_id(value: object) -> bool:
    if not isinstance(value, str) or len(value) > MAX_ID_LENGTH:
        return False
    return _ID.fullmatch(value) is not None
