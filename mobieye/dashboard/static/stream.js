// The stream page: facts, latency chart, events and control refreshed every second, plus the
// live view (live.js). Everything goes to this dashboard's own origin.

import { drawChart } from "./chart.js";
import { startLive } from "./live.js";

const streamId = document.body.dataset.stream;
const api = `/api/streams/${encodeURIComponent(streamId)}`;
const $ = (id) => document.getElementById(id);
const DASH = "\u2013";
window.mobieyeChartPoints = 0;

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
  $("fact-state").textContent = s.stale ? "stale" : "live";
  $("fact-fps").textContent = fmt(s.fps);
  $("fact-latency").textContent = s.latency_ms
    ? `${s.latency_ms.p50.toFixed(0)} / ${s.latency_ms.p95.toFixed(0)}` : DASH;
  $("fact-model").textContent = s.model ?? DASH;
  $("fact-keyframe").textContent = fmt(s.keyframe_interval, 0);
  $("fact-detector").textContent = fmt(s.detector_fraction, 2);
  $("fact-sla").textContent = fmt(s.sla_ms, 0);
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

async function refresh() {
  try {
    const [s, workers, series, events] = await Promise.all([
      getJson(api), getJson("/api/workers"), getJson(`${api}/series`),
      getJson(`/api/events?limit=20&stream=${encodeURIComponent(streamId)}`),
    ]);
    showFacts(s, workers);
    window.mobieyeChartPoints = drawChart($("chart"), series.points, s.sla_ms);
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
