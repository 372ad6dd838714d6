"""The worker's front door, before any route runs: the bearer token on every route but
``/healthz`` and ``/livez`` (``/metrics`` has its own, optional), JSON-only POSTs, and a
body-size cap that is enforced on the ``Content-Length`` header and again on the bytes as they
arrive (a multi-GB POST is refused, never buffered)."""

from __future__ import annotations

import json
from collections.abc import Callable

from fastapi import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from mobieye.credentials import bearer_matches

OPEN_PATHS = frozenset({"/healthz", "/livez"})
METRICS_PATH = "/metrics"
UNAUTHORIZED = "missing or wrong credentials: send 'Authorization: Bearer <worker.token>'"


class WorkerGuard:
    """Pure ASGI middleware; ``on_refused(reason)`` counts each refusal (a metric)."""

    def __init__(
        self,
        app: ASGIApp,
        token: str | None,
        metrics_token: str | None,
        max_body_bytes: int,
        on_refused: Callable[[str], None],
    ) -> None:
        self.app = app
        self.token = token
        self.metrics_token = metrics_token
        self.max_body_bytes = max_body_bytes
        self.on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = self._problem(scope)
        if problem is None:
            await self.app(scope, receive, send)
            return
        status, reason, message = problem
        self.on_refused(reason)
        await _answer(send, status, message, bearer=status == 401)

    def _problem(self, scope: Scope) -> tuple[int, str, str] | None:
        path = scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        needed = self.metrics_token if path == METRICS_PATH else self.token
        if (
            path not in OPEN_PATHS
            and needed
            and not bearer_matches(headers.get("authorization"), needed)
        ):
            return 401, "unauthorized", UNAUTHORIZED
        if scope["method"] in ("POST", "PUT", "PATCH"):
            media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if media != "application/json":
                shown = media or "none"
                return 415, "media_type", f"the body must be application/json, not {shown}"
            length = headers.get("content-length")
            if length is not None:
                if not length.isdigit():
                    return 400, "bad_length", f"Content-Length {length[:40]!r} is not a number"
                if int(length) > self.max_body_bytes:
                    return 413, "too_large", self._too_large(int(length))
        return None

    def _too_large(self, size: int | None = None) -> str:
        said = f"of {size} bytes " if size is not None else ""
        return f"request body {said}exceeds the {self.max_body_bytes}-byte limit"


class BodyTooLarge(Exception):
    """A body that passed the limit while it was being read (no Content-Length, or a lie)."""


async def read_body(request: Request, limit: int) -> bytes:
    """The body, read as it arrives; BodyTooLarge as soon as it passes ``limit``."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"request body exceeds the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


async def _answer(send: Send, status: int, message: str, bearer: bool) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if bearer:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
