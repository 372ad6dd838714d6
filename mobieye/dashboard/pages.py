"""Minimal server-rendered pages: plain HTML, no scripts, every value escaped.

A placeholder for the real browser pages; they refresh themselves every few seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from urllib.parse import quote

from fastapi.responses import HTMLResponse

from mobieye.dashboard.views import StreamView, WorkerView
from mobieye.mqtt import ObjectEvent

# No scripts at all, and nothing loaded from anywhere else.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'none'"
NONE = "\u2013"  # an en dash marks a value not known yet
_STYLE = (
    "body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}"
    "th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}"
    "th{background:#f3f3f3}.stale,.offline{color:#999}.muted{color:#777}"
)


def _page(title: str, body: str, status: int = 200, refresh: bool = True) -> HTMLResponse:
    meta = '<meta http-equiv="refresh" content="5">' if refresh else ""
    html = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">{meta}'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(
        html,
        status_code=status,
        headers={"content-security-policy": _CSP, "x-content-type-options": "nosniff"},
    )


def _fmt(value: object, digits: int = 1) -> str:
    if value is None:
        return NONE
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(headers: Sequence[str], rows: Iterable[tuple[str, Sequence[str]]]) -> str:
    """``rows``: (css class, cells already escaped)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        f'<tr class="{cls}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
        for cls, cells in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _latency(s: StreamView) -> str:
    lat = s.latency_ms
    return NONE if lat is None else f"{lat.p50:.0f} / {lat.p95:.0f}"


def index_page(workers: Sequence[WorkerView], streams: Sequence[StreamView]) -> HTMLResponse:
    w_rows = [
        (
            "stale" if w.stale else w.status,
            [
                escape(w.id),
                escape(w.status + (" (stale)" if w.stale else "")),
                escape(w.url or NONE),
                f"{w.streams} / {w.capacity}",
                _fmt(w.load, 2),
                escape(", ".join(w.models) or NONE),
            ],
        )
        for w in workers
    ]
    s_rows = [
        (
            "stale" if s.stale else "",
            [
                f'<a href="/streams/{quote(s.id, safe="")}">{escape(s.id)}</a>',
                escape(s.worker),
                _fmt(s.fps),
                _latency(s),
                escape(s.model or NONE),
                _fmt(s.keyframe_interval),
                _fmt(s.detector_fraction, 2),
                "stale" if s.stale else "live",
            ],
        )
        for s in streams
    ]
    body = (
        "<h2>Workers</h2>"
        + (_table(["id", "status", "url", "streams", "load", "models"], w_rows)
           if w_rows else '<p class="muted">No worker seen yet.</p>')
        + "<h2>Streams</h2>"
        + (_table(["id", "worker", "fps", "latency p50 / p95 ms", "model", "keyframe interval",
                   "detector share", "state"], s_rows)
           if s_rows else '<p class="muted">No stream seen yet.</p>')
    )  # fmt: skip
    return _page("MobiEye fleet", body)


def stream_page(stream: StreamView, events: Sequence[ObjectEvent]) -> HTMLResponse:
    facts = [
        ("worker", escape(stream.worker)),
        ("state", "stale" if stream.stale else "live"),
        ("fps", _fmt(stream.fps)),
        ("latency p50 / p95 ms", _latency(stream)),
        ("model", escape(stream.model or NONE)),
        ("keyframe interval", _fmt(stream.keyframe_interval)),
        ("detector share", _fmt(stream.detector_fraction, 2)),
        ("SLA ms", _fmt(stream.sla_ms, 0)),
    ]
    e_rows = [
        ("", [escape(e.type), str(e.track_id), escape(e.label), f"{e.score:.2f}"]) for e in events
    ]
    body = (
        '<p><a href="/">← fleet</a></p>'
        + _table(["", ""], [("", [escape(k), v]) for k, v in facts])
        + "<h2>Recent objects</h2>"
        + (_table(["event", "track", "label", "score"], e_rows)
           if e_rows else '<p class="muted">No object events yet.</p>')
    )  # fmt: skip
    return _page(f"Stream {stream.id}", body)


def not_found_page(what: str) -> HTMLResponse:
    body = f'<p>{escape(what)}</p><p><a href="/">← fleet</a></p>'
    return _page("Not found", body, status=404, refresh=False)
