"""Bearer tokens: one constant-time check for every process that takes one (worker, dashboard),
and the one way a token is made."""

from __future__ import annotations

import hmac
import secrets

MIN_TOKEN_LENGTH = 16


def generate_token() -> str:
    return secrets.token_urlsafe(24)


def bearer_matches(header: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header value is ``Bearer <token>``; constant time in the
    candidate, so response timing says nothing about how much of it was right."""
    if header is None:
        return False
    scheme, _, credentials = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        credentials.strip().encode("utf-8", "replace"), token.encode()
    )


def bearer_header(token: str | None) -> dict[str, str]:
    """The request header that carries ``token`` (none without one)."""
    return {"Authorization": f"Bearer {token}"} if token else {}
