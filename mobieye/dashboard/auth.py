"""Token auth for the dashboard: ``Authorization: Bearer <token>``, or ``?token=<token>`` once on
a page, which sets a session cookie so the browser need not keep the token in its URLs.

The cookie holds a random session id that maps to an expiry here, never the token itself: a
leaked cookie dies with the process or its expiry, and the token stays out of cookie stores.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from collections import OrderedDict
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mobieye.credentials import MIN_TOKEN_LENGTH, bearer_matches, generate_token
from mobieye.errors import ConfigError

log = logging.getLogger(__name__)

TOKEN_ENV = "MOBIEYE_DASHBOARD_TOKEN"
COOKIE = "mobieye_session"
OPEN_PATHS = frozenset({"/healthz"})
UNAUTHORIZED = (
    "missing or invalid credentials: send 'Authorization: Bearer <token>', or open a page "
    "with ?token=<token> (the URL the dashboard printed at start)"
)


def resolve_token(flag: str | None) -> tuple[str, bool]:
    """The token from ``--token``, else $MOBIEYE_DASHBOARD_TOKEN, else a new one.

    Returns (token, generated).
    """
    token = flag if flag is not None else os.environ.get(TOKEN_ENV)
    if token is None:
        return generate_token(), True
    token = token.strip()
    if not token:
        raise ConfigError(f"the dashboard token is empty (--token or {TOKEN_ENV})")
    if len(token) < MIN_TOKEN_LENGTH:
        log.warning("the dashboard token is short (%d characters): easy to guess", len(token))
    return token, False


class Sessions:
    """Random session ids with an expiry, at most ``max_sessions`` (the oldest go first)."""

    def __init__(self, ttl_s: float = 12 * 3600, max_sessions: int = 1000) -> None:
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        # Keyed by a hash of the id: lookup timing then says nothing about the ids themselves.
        self._expiry: OrderedDict[str, float] = OrderedDict()

    def create(self) -> str:
        sid = secrets.token_urlsafe(32)
        self._expiry[_digest(sid)] = time.monotonic() + self.ttl_s
        while len(self._expiry) > self.max_sessions:
            self._expiry.popitem(last=False)
        return sid

    def valid(self, sid: str) -> bool:
        key = _digest(sid)
        expiry = self._expiry.get(key)
        if expiry is None:
            return False
        if time.monotonic() >= expiry:
            del self._expiry[key]
            return False
        return True

    def __len__(self) -> int:
        return len(self._expiry)


class PhoneGrants(Sessions):
    """Short-lived, single-stream grants for a phone's camera: a grant opens the /phone page
    and its script, and is used up by the one offer it makes. Never the dashboard's token (a
    phone holding it could command the fleet), never a worker's."""

    def __init__(self, ttl_s: float = 600.0, max_grants: int = 100) -> None:
        super().__init__(ttl_s, max_grants)

    def consume(self, grant: str) -> bool:
        if not self.valid(grant):
            return False
        del self._expiry[_digest(grant)]
        return True


GRANT_PAGES = frozenset({"/phone", "/static/phone.js", "/static/live.js", "/static/favicon.svg"})
GRANT_OFFER = "/api/phone/offer"
GRANT_ICE = "/api/ice-servers"  # the phone page's STUN/TURN servers (not used up)
GRANT_COOKIE = "mobieye_grant"


def _cookie(headers: list[str], name: str) -> str | None:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load("; ".join(headers))
    except Exception:  # a garbled Cookie header holds nothing
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None else None


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class TokenAuth:
    """Pure ASGI middleware (HTTP and WebSocket alike) guarding every path but OPEN_PATHS."""

    def __init__(
        self,
        app: ASGIApp,
        token: str,
        sessions: Sessions | None = None,
        grants: PhoneGrants | None = None,
    ) -> None:
        if not token:
            raise ConfigError("the dashboard token must not be empty")
        self.app = app
        self._token = token.encode()
        # Not `or`: an empty store is falsy (it has a length), and must still be the one shared.
        self.sessions = sessions if sessions is not None else Sessions()
        self.grants = grants if grants is not None else PhoneGrants()

    def token_ok(self, candidate: str) -> bool:
        return hmac.compare_digest(candidate.encode(), self._token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        auth: str | None = None
        cookies: list[str] = []  # HTTP/2 may split cookies over several headers
        for key, value in scope["headers"]:
            name = key.decode("latin-1").lower()
            if name == "authorization":
                auth = value.decode("latin-1")
            elif name == "cookie":
                cookies.append(value.decode("latin-1"))
        if self._bearer_ok(auth) or self._cookie_ok("; ".join(cookies) or None):
            await self.app(scope, receive, send)
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        path = scope["path"]
        grant = query.get("grant", [None])[-1]
        if scope["type"] == "http" and path == "/phone" and grant and self.grants.valid(grant):
            # The page's scripts and its offer carry the grant as a cookie from here on.
            await self.app(scope, receive, self._with_cookie(send, scope, GRANT_COOKIE, grant))
            return
        held = _cookie(cookies, GRANT_COOKIE)
        if scope["type"] == "http" and held is not None and self._grant_ok(path, held):
            await self.app(scope, receive, send)
            return
        given = query.get("token", [None])[-1]
        is_page = scope["type"] == "http" and not scope["path"].startswith("/api/")
        if is_page and given is not None and self.token_ok(given):
            await self.app(scope, receive, self._with_cookie(send, scope))
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "unauthorized"})
            return
        await _unauthorized(send)

    def _grant_ok(self, path: str, grant: str) -> bool:
        """A phone's grant opens its page and scripts, and its one offer uses it up."""
        if path in GRANT_PAGES or path == GRANT_ICE:
            return self.grants.valid(grant)
        return path == GRANT_OFFER and self.grants.consume(grant)

    def _bearer_ok(self, value: str | None) -> bool:
        return bearer_matches(value, self._token.decode())

    def _cookie_ok(self, value: str | None) -> bool:
        if value is None:
            return False
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(value)
        except Exception:  # a garbled Cookie header is just no session
            return False
        morsel = jar.get(COOKIE)
        return morsel is not None and self.sessions.valid(morsel.value)

    def _with_cookie(
        self, send: Send, scope: Scope, name: str = COOKIE, value: str | None = None
    ) -> Send:
        ttl = self.grants.ttl_s if name == GRANT_COOKIE else self.sessions.ttl_s
        value = value or self.sessions.create()
        cookie = f"{name}={value}; Path=/; Max-Age={int(ttl)}; HttpOnly; SameSite=Strict"
        if scope.get("scheme") == "https":
            cookie += "; Secure"

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"set-cookie", cookie.encode("latin-1")))
                # The URL carries the token: keep it out of caches and Referer headers.
                headers.append((b"cache-control", b"no-store"))
                headers.append((b"referrer-policy", b"no-referrer"))
                message = {**message, "headers": headers}
            await send(message)

        return send_with_cookie


async def _unauthorized(send: Send) -> None:
    body = json.dumps({"error": UNAUTHORIZED}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b"Bearer"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
