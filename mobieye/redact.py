"""Make a user-given string safe to log: secrets in URLs masked, control characters escaped.

A camera URL often carries its password (``rtsp://admin:secret@cam/stream``, or ``?pwd=...``);
logs, reports and the hello sent to the worker must never show it. A control character in a
logged value could forge log lines, so those are escaped too.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
# Query parameters that cameras and services use for credentials (matched case-insensitively).
SECRET_PARAMS = frozenset(
    {"password", "passwd", "pass", "pwd", "token", "access_token", "auth", "key", "secret",
     "signature", "sig"}
)  # fmt: skip
_PARAM_RE = re.compile(r"(?P<name>[^&;=]*)=(?P<value>[^&;]*)")


def printable(text: str) -> str:
    """``text`` with every non-printable character (newline, ESC, ...) as a Python escape."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _mask_query(query: str) -> str:
    def mask(m: re.Match[str]) -> str:
        return f"{m['name']}={MASK}" if m["name"].lower() in SECRET_PARAMS else m[0]

    return _PARAM_RE.sub(mask, query)


def redact_url(url: str) -> str:
    """``url`` with its password (userinfo) and secret query values masked, safe to log.

    ``rtsp://user:pass@host:554/path`` -> ``rtsp://user:***@host:554/path``; a URL that
    cannot be parsed loses all of its userinfo instead.
    """
    # Escaped first: urlsplit would silently drop a newline or tab, hiding what was given.
    url = printable(url)
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced "[" in the host: mask anything before an "@"
        return re.sub(r"(?<=//)[^/?#]*@", f"{MASK}@", url)
    userinfo, at, host = parts.netloc.rpartition("@")
    netloc = parts.netloc
    if at:
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{host}" if colon else f"{user}@{host}"
    query = _mask_query(parts.query)
    return urlunsplit(parts._replace(netloc=netloc, query=query))
