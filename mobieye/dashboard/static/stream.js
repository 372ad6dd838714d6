// The stream page: facts, charts, timeline, events and control refreshed every second, plus
// the live view (live.js). Everything goes to this dashboard's own origin.

import { drawBands, drawChart, timeSpan } from "./chart.js";
import { startLive } from "./live.js";

const streamId = document.body.dataset.stream;
const api = `/api/streams/${encodeURIComponent(streamId)}`;
const $ = (id) => document.getElementById(id);
const DASH = "\u2013";
const STALE_BOX_AGE_FRAMES = Number(document.body.dataset.staleBoxAge);  // the store's bound
window.mobieyeChartPoints = 0;  // the latency chart's, for tests
window.mobieyeCharts = {};  // chart id -> points drawn

async function getJson(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: ${r.status}`);
  return r.json();
}

function fmt(v, digits = 1) {
  return v == null ? DASH : typeof v === "number" ? v.toFixed(digits) : String(v);
}

function showFacts(s, workers) {
  const w = workers.find((w) => w.id === s.worker);
  $("fact-worker").textContent = s.worker + (s.worker_status ? ` (${s.worker_status})` : "");
  $("fact-worker-url").textContent = w?.url ?? DASH;
  $("fact-state").textContent = s.stale ? "stale" : s.boxes_stale ? "stale boxes" : "live";
  $("fact-fps").textContent = fmt(s.fps);
  $("fact-latency").textContent = s.latency_ms
    ? `${s.latency_ms.p50.toFixed(0)} / ${s.latency_ms.p95.toFixed(0)}` : DASH;
  $("fact-model").textContent = s.model ?? DASH;
  $("fact-keyframe").textContent = fmt(s.keyframe_interval, 0);
  $("fact-detector").textContent = fmt(s.detector_fraction, 2);
  const age = s.box_age_frames;
  $("fact-box-age").textContent = age
    ? `${age.p50.toFixed(0)} / ${age.p95.toFixed(0)} / ${age.max.toFixed(0)}` : DASH;
  $("fact-sla").textContent = fmt(s.sla_ms, 0);
  $("fact-uplink").textContent = fmt(s.uplink_kbps, 0);
  $("fact-level").textContent = s.level == null ? DASH
    : `${s.level} (${fmt(s.target_fps, 0)} / ${fmt(s.bitrate_kbps, 0)})`;
  $("fact-failovers").textContent = fmt(s.failovers, 0);
  showModels(w?.models ?? []);
}

// The model <select>: the stream's worker's models, rebuilt only when that list changes (so a
// choice being made is not reset every second).
function showModels(models) {
  const select = $("control-model");
  const key = JSON.stringify(models);
  if (select.dataset.models === key) return;
  select.dataset.models = key;
  const chosen = select.value;
  const blank = document.createElement("option");
  blank.value = "";
  blank.textContent = "(unchanged)";
  const options = models.map((m) => {
    const o = document.createElement("option");
    o.value = o.textContent = String(m);  // text only: names come from the fleet
    return o;
  });
  select.replaceChildren(blank, ...options);
  select.value = models.includes(chosen) ? chosen : "";
}

function showEvents(events) {
  const rows = events.map((e) => {
    const tr = document.createElement("tr");
    for (const v of [e.type, e.track_id, e.label, e.score.toFixed(2)]) {
      const td = document.createElement("td");
      td.textContent = String(v);  // text only: labels come from the fleet
      tr.append(td);
    }
    return tr;
  });
  $("events").replaceChildren(...rows);
}

// Every chart on one time axis, with the timeline's entries as vertical markers.
function showCharts(points, timeline, sla) {
  const span = timeSpan(points);
  const markers = timeline.map((e) => ({ t: e.t, kind: e.kind }));
  // The nominal keyframe share of the policy's interval, beside the measured one.
  const pts = points.map((p) => ({
    ...p, nominal_share: p.keyframe_interval ? 1 / p.keyframe_interval : null,
  }));
  const common = { points: pts, span, markers };
  const charts = {
    chart: drawChart($("chart"), { ...common, unit: "ms", ref: { value: sla, color: "#d62728" },
      lines: [{ key: "p50_ms", color: "#1f77b4" }, { key: "p95_ms", color: "#ff7f0e" }] }),
    "chart-fps": drawChart($("chart-fps"), { ...common, unit: "fps",
      lines: [{ key: "fps", color: "#2ca02c" },
        { key: "target_fps", color: "#7f7f7f", dash: [6, 4] }] }),
    "chart-uplink": drawChart($("chart-uplink"), { ...common, unit: "kbps",
      lines: [{ key: "uplink_kbps", color: "#17becf" },
        { key: "bitrate_kbps", color: "#7f7f7f", dash: [6, 4] }] }),
    "chart-keyframes": drawChart($("chart-keyframes"), { ...common, unit: "share", yMax: 1,
      lines: [{ key: "detector_fraction", color: "#8c564b" },
        { key: "nominal_share", color: "#7f7f7f", dash: [6, 4] }] }),
    "chart-box-age": drawChart($("chart-box-age"), { ...common, unit: "frames",
      ref: { value: STALE_BOX_AGE_FRAMES, color: "#d62728" },
      lines: [{ key: "box_age_p95", color: "#e377c2" }] }),
    "chart-model": drawBands($("chart-model"), { ...common, key: "model" }),
  };
  window.mobieyeCharts = charts;
  window.mobieyeChartPoints = charts.chart;
}

function showTimeline(timeline) {
  const rows = timeline.slice().reverse().slice(0, 50).map((e) => {
    const tr = document.createElement("tr");
    tr.dataset.kind = e.kind;
    const when = new Date(e.t * 1000).toLocaleTimeString();
    for (const v of [when, e.kind, e.text]) {
      const td = document.createElement("td");
      td.textContent = String(v);  // text only: reasons come from the fleet
      tr.append(td);
    }
    return tr;
  });
  $("timeline").replaceChildren(...rows);
}

async function refresh() {
  try {
    const [s, workers, series, events] = await Promise.all([
      getJson(api), getJson("/api/workers"), getJson(`${api}/series`),
      getJson(`/api/events?limit=20&stream=${encodeURIComponent(streamId)}`),
    ]);
    showFacts(s, workers);
    showCharts(series.points, series.timeline, s.sla_ms);
    showTimeline(series.timeline);
    showEvents(events);
  } catch (err) {
    $("fact-state").textContent = `ended or unreachable (${err.message})`;
  }
}

// The control form: only the fields filled in are sent; the answer (202 or why not) is shown.
$("control").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const command = {};
  for (const [k, v] of new FormData(ev.target)) {
    if (v !== "") command[k] = k === "model" ? v : Number(v);
  }
  const out = $("control-result");
  const r = await fetch(`${api}/set`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(command),
  });
  const body = await r.json().catch(() => ({}));
  out.dataset.status = String(r.status);
  out.textContent = r.status === 202
    ? `${r.status} accepted: ${JSON.stringify(body.command)}`
    : `${r.status} refused: ${body.error ?? r.statusText}`;
});

refresh();
setInterval(refresh, 1000);
startLive(streamId, { video: $("video"), overlay: $("overlay"), img: $("mjpeg"),
  status: $("live-path") }, new URLSearchParams(location.search).get("live") === "mjpeg");
