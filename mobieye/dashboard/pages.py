"""Server-rendered pages, every value escaped. The fleet page is plain HTML refreshing itself;
the stream page loads /static/stream.js (same-origin ES modules only, no inline script)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from urllib.parse import quote

from fastapi.responses import HTMLResponse

from mobieye.dashboard.views import STALE_BOX_AGE_FRAMES, StreamView, WorkerView
from mobieye.fleet.payloads import ObjectEvent

# No scripts at all, and nothing loaded from anywhere else.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'none'"
NONE = "\u2013"  # an en dash marks a value not known yet
_STYLE = (
    "body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}"
    "th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}"
    "th{background:#f3f3f3}.stale,.offline{color:#999}.muted{color:#777}"
    "[hidden]{display:none!important}"
    ".charts{display:flex;flex-wrap:wrap;gap:0 1.5em}.chart h3{margin:.6em 0 .2em;font-size:1em}"
    ".chart p{margin:.1em 0 .4em}"
)


def _page(
    title: str,
    body: str,
    status: int = 200,
    refresh: bool = True,
    csp: str = _CSP,
    body_attrs: str = "",
) -> HTMLResponse:
    meta = '<meta http-equiv="refresh" content="5">' if refresh else ""
    html = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">{meta}'
        '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body{body_attrs}><h1>{escape(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(
        html,
        status_code=status,
        headers={"content-security-policy": csp, "x-content-type-options": "nosniff"},
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


def _level(s: StreamView) -> str:
    if s.level is None:
        return NONE
    return f"{s.level} ({_fmt(s.target_fps, 0)} / {_fmt(s.bitrate_kbps)})"


def _box_age(s: StreamView) -> str:
    age = s.box_age_frames
    return NONE if age is None else f"{age.p50:.0f} / {age.p95:.0f} / {age.max:.0f}"


def _stream_state(s: StreamView) -> str:
    return "stale" if s.stale else "stale boxes" if s.boxes_stale else "live"


def index_page(workers: Sequence[WorkerView], streams: Sequence[StreamView]) -> HTMLResponse:
    w_rows = [
        (
            "stale" if w.stale or w.problem else w.status,
            [
                escape(w.id),
                escape(
                    w.status
                    + (" (stale)" if w.stale else "")
                    + (" (draining: moving its streams away)" if w.draining else "")
                ),
                escape("yes" if w.problem is None else f"no: {w.problem}"),
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
            "stale" if s.stale or s.boxes_stale else "",
            [
                f'<a href="/streams/{quote(s.id, safe="")}">{escape(s.id)}</a>',
                escape(s.worker),
                _fmt(s.fps),
                _latency(s),
                escape(s.model or NONE),
                _fmt(s.keyframe_interval),
                _fmt(s.detector_fraction, 2),
                _box_age(s),
                _level(s),
                _fmt(s.failovers),
                _stream_state(s),
            ],
        )
        for s in streams
    ]
    body = (
        '<p><a href="/phone">Stream this device\'s camera</a></p>'
        "<h2>Workers</h2>"
        + (_table(["id", "status", "detects", "url", "streams", "load", "models"], w_rows)
           if w_rows else '<p class="muted">No worker seen yet.</p>')
        + "<h2>Streams</h2>"
        + (_table(["id", "worker", "fps", "latency p50 / p95 ms", "model", "keyframe interval",
                   "detector share", "box age p50 / p95 / max frames", "level (fps / kbps)",
                   "failovers", "state"], s_rows)
           if s_rows else '<p class="muted">No stream seen yet.</p>')
    )  # fmt: skip
    return _page("MobiEye fleet", body)


_STREAM_CSP = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; "
    "img-src 'self' blob: data:; media-src 'self' blob:; form-action 'none'"
)


def _legend(*items: tuple[str, str, bool]) -> str:
    """(label, colour, dashed) swatches under a chart."""
    swatch = {False: "\u2501", True: "\u2505"}
    cells = (
        f'{escape(label)} <span style="color:{color}">{swatch[dashed]}</span>'
        for label, color, dashed in items
    )
    return '<p class="muted">' + " ".join(cells) + "</p>"


# (canvas id, heading, legend): drawn by /static/stream.js with the same colours.
_CHART_SPECS = [
    ("chart", "Latency, capture to result",
     _legend(("p50", "#1f77b4", False), ("p95", "#ff7f0e", False), ("SLA", "#d62728", True))),
    ("chart-fps", "Frame rate",
     _legend(("received", "#2ca02c", False), ("controller's target", "#7f7f7f", True))),
    ("chart-uplink", "Uplink",
     _legend(("received kbps", "#17becf", False), ("controller's bitrate cap", "#7f7f7f", True))),
    ("chart-keyframes", "Keyframe share",
     _legend(("frames detected", "#8c564b", False), ("1 / keyframe interval", "#7f7f7f", True))),
    ("chart-box-age", "Box age (frames since their detection)",
     _legend(("p95", "#e377c2", False), ("stale above", "#d62728", True))),
    ("chart-model", "Model in use", ""),
]  # fmt: skip
_CHARTS = "".join(
    f'<div class="chart"><h3>{escape(title)}</h3>'
    f'<canvas id="{cid}" width="520" height="{60 if cid == "chart-model" else 180}"></canvas>'
    f"{legend}</div>"
    for cid, title, legend in _CHART_SPECS
)

_LIVE = (
    '<h2>Live <small id="live-path" class="muted">connecting\u2026</small></h2>'
    '<div id="live" style="position:relative;display:inline-block;background:#111;'
    'min-width:320px;min-height:180px">'
    '<video id="video" muted autoplay playsinline style="display:block;max-width:100%"></video>'
    '<canvas id="overlay" style="position:absolute;left:0;top:0;width:100%;height:100%">'
    '</canvas><img id="mjpeg" alt="live view (MJPEG)" hidden style="display:block;max-width:100%">'
    "</div>"
    + '<div class="charts">'
    + _CHARTS
    + "</div>"
    + '<h2>Timeline</h2><p class="muted">Controller steps, failovers and operators\' settings, '
    'newest first; also marked on the charts (decision <span style="color:#7f7f7f">\u2506</span>'
    ' failover <span style="color:#d62728">\u2503</span> settings '
    '<span style="color:#9467bd">\u2506</span>).</p>'
    "<table><thead><tr><th>time</th><th>what</th><th>detail</th></tr></thead>"
    '<tbody id="timeline"></tbody></table>'
    '<h2>Control</h2><form id="control">'
    '<label>model <select name="model" id="control-model">'
    '<option value="">(unchanged)</option></select></label> '
    '<label>SLA ms <input name="sla_ms" type="number" min="1" step="any"></label> '
    '<label>keyframe interval <input name="keyframe_interval" type="number" min="1" step="1">'
    '</label> <button type="submit">Apply</button></form><p id="control-result"></p>'
)


def stream_page(stream: StreamView, events: Sequence[ObjectEvent]) -> HTMLResponse:
    """Server-rendered facts (kept fresh by /static/stream.js), the live view, chart, control."""
    facts = [  # (element id for the script, label, value)
        ("worker", "worker", escape(stream.worker)),
        ("worker-url", "worker url", NONE),
        ("state", "state", _stream_state(stream)),
        ("fps", "fps", _fmt(stream.fps)),
        ("latency", "latency p50 / p95 ms", _latency(stream)),
        ("model", "model", escape(stream.model or NONE)),
        ("keyframe", "keyframe interval", _fmt(stream.keyframe_interval)),
        ("detector", "detector share", _fmt(stream.detector_fraction, 2)),
        ("box-age", "box age p50 / p95 / max frames", _box_age(stream)),
        ("sla", "SLA ms", _fmt(stream.sla_ms, 0)),
        ("uplink", "uplink kbps", _fmt(stream.uplink_kbps, 0)),
        ("level", "controller level (fps / bitrate cap kbps)", _level(stream)),
        ("failovers", "failovers", _fmt(stream.failovers)),
    ]
    fact_rows = "".join(
        f'<tr><th>{escape(label)}</th><td id="fact-{fid}">{v}</td></tr>' for fid, label, v in facts
    )
    e_rows = "".join(
        f"<tr><td>{escape(e.type)}</td><td>{e.track_id}</td><td>{escape(e.label)}</td>"
        f"<td>{e.score:.2f}</td></tr>"
        for e in events
    )
    body = (
        '<p><a href="/">\u2190 fleet</a></p>'
        f"<table><tbody>{fact_rows}</tbody></table>"
        + _LIVE
        + "<h2>Recent objects</h2><table><thead><tr><th>event</th><th>track</th><th>label</th>"
        f'<th>score</th></tr></thead><tbody id="events">{e_rows}</tbody></table>'
        + '<script type="module" src="/static/stream.js"></script>'
    )
    attrs = f' data-stream="{escape(stream.id)}" data-stale-box-age="{STALE_BOX_AGE_FRAMES}"'
    return _page(f"Stream {stream.id}", body, refresh=False, csp=_STREAM_CSP, body_attrs=attrs)


def phone_page() -> HTMLResponse:
    """This browser's camera as a stream: sent to a worker, previewed with its boxes."""
    body = (
        '<p><a href="/">\u2190 fleet</a></p>'
        '<p>Status: <span id="phone-status">starting the camera\u2026</span></p>'
        '<div style="position:relative;display:inline-block;background:#111;min-width:320px">'
        '<video id="preview" muted autoplay playsinline style="display:block;max-width:100%">'
        '</video><canvas id="overlay" style="position:absolute;left:0;top:0;width:100%;'
        'height:100%"></canvas></div>'
        '<script type="module" src="/static/phone.js"></script>'
    )
    return _page("MobiEye phone", body, refresh=False, csp=_STREAM_CSP)


def not_found_page(what: str) -> HTMLResponse:
    body = f'<p>{escape(what)}</p><p><a href="/">← fleet</a></p>'
    return _page("Not found", body, status=404, refresh=False)
