// A small hand-written line chart: latency p50/p95 over time against the SLA line.

const COLORS = { p50: "#1f77b4", p95: "#ff7f0e", sla: "#d62728", axis: "#888" };
const PAD = { left: 44, right: 10, top: 10, bottom: 24 };

// points: [{t, p50_ms, p95_ms}] oldest first; sla: number or null. Returns points drawn.
export function drawChart(canvas, points, sla) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  const pts = points.filter((p) => p.p50_ms != null && p.p95_ms != null);
  const plotW = w - PAD.left - PAD.right, plotH = h - PAD.top - PAD.bottom;

  // Scales: time on x (at least a 10 s span), milliseconds on y from 0.
  const t0 = pts.length ? pts[0].t : 0;
  const t1 = pts.length ? Math.max(pts[pts.length - 1].t, t0 + 10) : 10;
  const yMax = niceMax(Math.max(1, sla ?? 0, ...pts.map((p) => p.p95_ms)) * 1.1);
  const x = (t) => PAD.left + ((t - t0) / (t1 - t0)) * plotW;
  const y = (ms) => PAD.top + plotH - (ms / yMax) * plotH;

  drawAxes(ctx, w, h, yMax, y, t1 - t0);
  if (sla != null) {
    ctx.save();
    ctx.setLineDash([6, 4]);
    line(ctx, [[PAD.left, y(sla)], [w - PAD.right, y(sla)]], COLORS.sla);
    ctx.restore();
  }
  line(ctx, pts.map((p) => [x(p.t), y(p.p50_ms)]), COLORS.p50);
  line(ctx, pts.map((p) => [x(p.t), y(p.p95_ms)]), COLORS.p95);
  if (!pts.length) {
    ctx.fillStyle = COLORS.axis;
    ctx.fillText("no latency yet", PAD.left + 10, PAD.top + 16);
  }
  return pts.length;
}

function drawAxes(ctx, w, h, yMax, y, span) {
  ctx.strokeStyle = COLORS.axis;
  ctx.fillStyle = COLORS.axis;
  ctx.lineWidth = 1;
  ctx.font = "11px system-ui, sans-serif";
  ctx.beginPath();
  ctx.moveTo(PAD.left, PAD.top);
  ctx.lineTo(PAD.left, h - PAD.bottom);
  ctx.lineTo(w - PAD.right, h - PAD.bottom);
  ctx.stroke();
  for (let i = 0; i <= 4; i++) {  // y ticks
    const ms = (yMax * i) / 4;
    ctx.fillText(ms.toFixed(0), 4, y(ms) + 4);
  }
  ctx.fillText(`ms  /  last ${span.toFixed(0)} s`, PAD.left + 4, h - 6);
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
