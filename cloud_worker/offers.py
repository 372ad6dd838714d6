"""Offers as they arrive over HTTP: size-checked, validated, refused with a reason (pure of
WebRTC: aiortc parses only what passed these checks)."""

from __future__ import annotations

import logging
import re

from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from cloud_worker.context import WorkerContext
from mobieye.clock import RTP_CLOCK_HZ
from mobieye.errors import validation_problems
from mobieye.ids import Id

log = logging.getLogger(__name__)


class OfferRequest(BaseModel):
    sdp: str = Field(min_length=1)
    type: str
    stream_id: Id | None = None
    # How the edge stamps its frames (mobieye.clock); a browser doesn't say (its RTP clock).
    frame_ticks: int | None = Field(default=None, ge=1, le=RTP_CLOCK_HZ)


def refuse(status: int, reason: str, state: WorkerContext, kind: str) -> JSONResponse:
    state.metrics.offers_refused.labels(kind).inc()
    log.warning("offer refused (%s): %s", kind, reason)
    return JSONResponse({"error": reason}, status_code=status)


def check_sdp(sdp: str) -> str | None:
    """Cheap structural checks before aiortc parses it; returns the problem or None."""
    if not sdp.startswith("v=0"):
        return "SDP must start with 'v=0'"
    if not re.search(r"^m=video ", sdp, re.MULTILINE):
        return "SDP offers no video (no 'm=video' line)"
    return None


def parse_offer(body: bytes, state: WorkerContext, kind: str = "") -> OfferRequest | JSONResponse:
    """The offer in a request body, or the 400 answer saying what is wrong with it.

    ``kind`` prefixes the refusal's metric label (``view_`` for viewers)."""
    limit = state.settings.worker.max_sdp_bytes
    if len(body) > limit:
        reason = f"offer of {len(body)} bytes exceeds the {limit}-byte limit"
        return refuse(400, reason, state, kind + "too_large")
    try:
        req = OfferRequest.model_validate_json(body)
    except ValidationError as exc:
        first = validation_problems(exc)[0]
        return refuse(400, f"bad offer: {first}", state, kind + "malformed")
    if req.type != "offer":
        reason = f"bad offer: type must be 'offer', got {req.type!r}"
        return refuse(400, reason, state, kind + "malformed")
    problem = check_sdp(req.sdp)
    if problem:
        return refuse(400, f"bad offer: {problem}", state, kind + "malformed")
    return req
