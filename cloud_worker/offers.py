"""Offers as they arrive over HTTP: size-checked, validated, refused with a reason (pure of
WebRTC: aiortc parses only what passed these checks)."""

from __future__ import annotations

import logging
from collections import Counter

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from cloud_worker.context import WorkerContext
from cloud_worker.guard import BodyTooLarge, read_body
from cloud_worker.stills import Uplink
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
    # video: frames on a WebRTC video track; keyframes (edge-first): stills on the data channel.
    uplink: Uplink = "video"


def refuse(status: int, reason: str, state: WorkerContext, kind: str) -> JSONResponse:
    state.metrics.offers_refused.labels(kind).inc()
    log.warning("offer refused (%s): %s", kind, reason)
    return JSONResponse({"error": reason}, status_code=status)


def check_sdp(sdp: str, uplink: Uplink = "video") -> str | None:
    """Cheap structural checks before aiortc parses it; returns the problem or None.

    A video stream is exactly one video and, optionally, one data channel; a keyframes stream
    is exactly one data channel (its stills come on it) and no media. Anything more (audio, a
    second video) would be decoded or queued for nobody."""
    if not sdp.startswith("v=0"):
        return "SDP must start with 'v=0'"
    # Lines as aiortc splits them (str.splitlines: a bare \r ends a line too).
    media = Counter(line[2:].split(" ", 1)[0] for line in sdp.splitlines() if line.startswith("m="))
    if uplink == "keyframes":
        return _keyframes_problem(media)
    if not media["video"]:
        return "SDP offers no video (no 'm=video' line)"
    if media["video"] > 1:
        return f"SDP offers {media['video']} videos: exactly one is taken"
    if media["application"] > 1:
        return f"SDP offers {media['application']} data channel sections; at most one"
    other = sorted(set(media) - {"video", "application"})
    if other:
        return f"SDP offers {', '.join(other)}: only one video and a data channel are taken"
    return None


def _keyframes_problem(media: Counter[str]) -> str | None:
    other = sorted(set(media) - {"application"})
    if other:
        return (f"SDP offers {', '.join(other)} on a keyframes uplink: its frames come as stills "
                "on the data channel, so only one 'm=application' is taken")  # fmt: skip
    if not media["application"]:
        return "SDP offers no data channel (no 'm=application' line): a keyframes uplink needs one"
    if media["application"] > 1:
        return f"SDP offers {media['application']} data channel sections; exactly one is taken"
    return None


def sdp_rejection(exc: BaseException) -> str:
    """What aiortc's refusal says; its parser checks with bare asserts, which say nothing."""
    said = str(exc).strip()
    kind = type(exc).__name__
    if not said or isinstance(exc, AssertionError):
        return f"aiortc could not parse it ({kind}{': ' + said if said else ''})"
    return f"{said[:300]} ({kind})"


async def read_offer(
    request: Request, state: WorkerContext, kind: str = ""
) -> OfferRequest | JSONResponse:
    """The offer in the request, read with the body cap (it may lack a Content-Length)."""
    try:
        body = await read_body(request, state.settings.worker.max_body_bytes)
    except BodyTooLarge as exc:
        return refuse(413, str(exc), state, kind + "too_large")
    return parse_offer(body, state, kind)


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
    problem = check_sdp(req.sdp, req.uplink)
    if problem:
        return refuse(400, f"bad offer: {problem}", state, kind + "malformed")
    return req
