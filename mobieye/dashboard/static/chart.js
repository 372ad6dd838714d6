// Small hand-written time-series charts on a canvas (no library to vendor): lines against a
// reference line, a band chart for a categorical value (the model in use), and vertical markers
// for what changed the stream (controller steps, failovers, operators' settings). All charts of
// a page share one time axis, so a marker lines up with its effect on every chart.

const AXIS = "#888";
const PAD = { left: 48, right: 10, top: 10, bottom: 24 };
export const MARKER_COLORS = { decision: "#7f7f7f", failover: "#d62728", settings: "#9467bd" };
const BAND_COLORS = ["#aec7e8", "#ffbb78", "#98df8a", "#c5b0d5", "#c49c94", "#f7b6d2"];

// The time span every chart draws: the points' (at least 10 s).
export function timeSpan(points) {
  const t0 = points.length ? points[0].t : 0;
  const t1 = points.length ? Math.max(points[points.length - 1].t, t0 + 10) : 10;
  return [t0, t1];
}

// spec: {points, span, lines: [{key, color, dash?}], unit, ref?: {value, color}, yMax?,
// markers?: [{t, kind}]}. Returns how many points had a value for the first line.
export function drawChart(canvas, spec) {
  const { ctx, w, h, plotW, plotH } = begin(canvas);
  const [t0, t1] = spec.span;
  const values = spec.lines.flatMap((l) => spec.points.map((p) => p[l.key]))
    .filter((v) => v != null);
  const top = spec.yMax ?? niceMax(Math.max(1e-9, spec.ref?.value ?? 0, ...values) * 1.1);
  const x = (t) => PAD.left + ((t - t0) / (t1 - t0)) * plotW;
  const y = (v) => PAD.top + plotH - (Math.min(v, top) / top) * plotH;

  drawAxes(ctx, w, h, top, y, spec.unit, t1 - t0);
  drawMarkers(ctx, spec.markers ?? [], x, t0, t1, PAD.top, h - PAD.bottom);
  if (spec.ref?.value != null) {
    ctx.save();
    ctx.setLineDash([6, 4]);
    line(ctx, [[PAD.left, y(spec.ref.value)], [w - PAD.right, y(spec.ref.value)]],
      spec.ref.color);
    ctx.restore();
  }
  let drawn = 0;
  spec.lines.forEach((l, i) => {
    const pts = spec.points.filter((p) => p[l.key] != null);
    if (i === 0) drawn = pts.length;
    ctx.save();
    if (l.dash) ctx.setLineDash(l.dash);
    line(ctx, pts.map((p) => [x(p.t), y(p[l.key])]), l.color);
    ctx.restore();
  });
  if (!drawn) {
    ctx.fillStyle = AXIS;
    ctx.fillText("no data yet", PAD.left + 10, PAD.top + 16);
  }
  return drawn;
}

// One coloured band per run of equal values of points[key], labelled where it fits.
// Returns how many points had a value.
export function drawBands(canvas, spec) {
  const { ctx, w, h, plotW } = begin(canvas);
  const [t0, t1] = spec.span;
  const x = (t) => PAD.left + ((t - t0) / (t1 - t0)) * plotW;
  const pts = spec.points.filter((p) => p[spec.key] != null);
  const colors = new Map();
  const colorOf = (v) => {
    if (!colors.has(v)) colors.set(v, BAND_COLORS[colors.size % BAND_COLORS.length]);
    return colors.get(v);
  };
  const bandTop = PAD.top, bandH = h - PAD.top - PAD.bottom;
  for (let i = 0; i < pts.length; i++) {
    let j = i;
    while (j + 1 < pts.length && pts[j + 1][spec.key] === pts[i][spec.key]) j++;
    const x0 = x(pts[i].t);
    const x1 = j + 1 < pts.length ? x(pts[j + 1].t) : Math.max(x(pts[j].t), x0 + 2);
    ctx.fillStyle = colorOf(pts[i][spec.key]);
    ctx.fillRect(x0, bandTop, Math.max(1, x1 - x0), bandH);
    // The label, clipped to its band: a long model name is cut, never drawn over the next.
    ctx.save();
    ctx.beginPath();
    ctx.rect(x0, bandTop, Math.max(1, x1 - x0), bandH);
    ctx.clip();
    ctx.fillStyle = "#222";
    ctx.fillText(String(pts[i][spec.key]), x0 + 4, bandTop + bandH / 2 + 4);
    ctx.restore();
    i = j;
  }
  drawMarkers(ctx, spec.markers ?? [], x, t0, t1, PAD.top, h - PAD.bottom);
  ctx.fillStyle = AXIS;
  ctx.fillText(pts.length ? `last ${(t1 - t0).toFixed(0)} s` : "no data yet",
    PAD.left + 4, h - 6);
  return pts.length;
}

function begin(canvas) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  ctx.font = "11px system-ui, sans-serif";
  return { ctx, w, h, plotW: w - PAD.left - PAD.right, plotH: h - PAD.top - PAD.bottom };
}

function drawMarkers(ctx, markers, x, t0, t1, yTop, yBottom) {
  for (const m of markers) {
    if (m.t < t0 || m.t > t1) continue;
    ctx.save();
    ctx.strokeStyle = MARKER_COLORS[m.kind] ?? AXIS;
    ctx.lineWidth = m.kind === "failover" ? 2 : 1;
    if (m.kind !== "failover") ctx.setLineDash([3, 3]);
    ctx.beginPath();
    ctx.moveTo(x(m.t), yTop);
    ctx.lineTo(x(m.t), yBottom);
    ctx.stroke();
    ctx.restore();
  }
}

function drawAxes(ctx, w, h, top, y, unit, span) {
  ctx.strokeStyle = AXIS;
  ctx.fillStyle = AXIS;
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.moveTo(PAD.left, PAD.top);
  ctx.lineTo(PAD.left, h - PAD.bottom);
  ctx.lineTo(w - PAD.right, h - PAD.bottom);
  ctx.stroke();
  for (let i = 0; i <= 4; i++) {  // y ticks
    const v = (top * i) / 4;
    ctx.fillText(top < 10 ? v.toFixed(2) : v.toFixed(0), 4, y(v) + 4);
  }
  ctx.fillText(`${unit}  /  last ${span.toFixed(0)} s`, PAD.left + 4, h - 6);
}

function line(ctx, xy, color) {
  if (xy.length === 0) return;
  ctx.strokeStyle = color;
  ctx.lineWidth = 2;
  ctx.beginPath();
  xy.forEach(([px, py], i) => (i ? ctx.lineTo(px, py) : ctx.moveTo(px, py)));
  if (xy.length === 1) ctx.arc(xy[0][0], xy[0][1], 2, 0, 2 * Math.PI);
  ctx.stroke();
}

// 1, 2 or 5 times a power of ten, at least v.
function niceMax(v) {
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 5, 10].map((m) => m * p).find((n) => n >= v);
}
