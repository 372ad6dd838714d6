// The live view: WebRTC from the worker (via the dashboard's proxy) with boxes drawn per frame
// from the data channel's results, or the worker's MJPEG (boxes drawn there) as a fallback.

const CONNECT_TIMEOUT_MS = 5000;
const MAX_RESULTS = 150;  // ~5 s of results at 30 fps, keyed by RTP timestamp
const RTP_WRAP = 2 ** 32;

window.mobieyeBoxesDrawn = 0;
window.mobieyeLabelsDrawn = [];
window.mobieyeLivePath = "connecting";

// forceMjpeg: skip WebRTC (e.g. ?live=mjpeg where UDP is blocked).
export async function startLive(streamId, { video, overlay, img, status }, forceMjpeg = false) {
  const setPath = (path, note) => {
    window.mobieyeLivePath = path;
    status.textContent = note ?? path;
  };
  const base = `/api/streams/${encodeURIComponent(streamId)}`;
  const fallback = (why) => {
    setPath("mjpeg", `MJPEG fallback (${why})`);
    video.hidden = true;
    overlay.hidden = true;
    img.hidden = false;
    img.src = `${base}/mjpeg`;
  };
  if (forceMjpeg) {
    fallback("asked for");
    return;
  }
  let pc;
  try {
    pc = await connect(base, video, overlay);
  } catch (err) {
    fallback(String(err.message ?? err));
    return;
  }
  // Connected within the timeout, with frames playing? Otherwise fall back.
  const ok = await waitFor(() => pc.connectionState === "connected" && video.currentTime > 0,
    CONNECT_TIMEOUT_MS);
  if (ok) {
    setPath("webrtc", "WebRTC");
  } else {
    pc.close();
    fallback(`WebRTC not playing after ${CONNECT_TIMEOUT_MS / 1000} s`);
  }
}

// STUN/TURN servers from the dashboard (TURN credentials it minted, which expire); none when it
// has none to give, which is what a page on the dashboard's own network needs.
export async function iceConfig() {
  try {
    const r = await fetch("/api/ice-servers", { cache: "no-store" });
    if (!r.ok) return { iceServers: [] };
    const c = await r.json();
    return { iceServers: c.ice_servers ?? [], iceTransportPolicy: c.ice_transport_policy ?? "all" };
  } catch {
    return { iceServers: [] };
  }
}

async function connect(base, video, overlay) {
  const pc = new RTCPeerConnection(await iceConfig());
  pc.addTransceiver("video", { direction: "recvonly" });
  const channel = pc.createDataChannel("results");
  const results = new Map();  // rtpTimestamp -> Result, insertion (= pts) order
  channel.onmessage = (ev) => {
    const msg = JSON.parse(ev.data);
    if (msg.type !== "result") return;
    results.set(msg.pts % RTP_WRAP, msg);
    if (results.size > MAX_RESULTS) results.delete(results.keys().next().value);
  };
  pc.ontrack = (ev) => {
    video.srcObject = ev.streams[0] ?? new MediaStream([ev.track]);
    video.play().catch(() => {});
    drawLoop(video, overlay, results);
  };
  await pc.setLocalDescription(await pc.createOffer());
  await waitFor(() => pc.iceGatheringState === "complete", 2000);  // no trickle: one round
  const r = await fetch(`${base}/view`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ sdp: pc.localDescription.sdp, type: pc.localDescription.type }),
  });
  const answer = await r.json();
  if (!r.ok) {
    pc.close();
    throw new Error(answer.error ?? `view refused (${r.status})`);
  }
  await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
  return pc;
}

// Per displayed frame: the result with the frame's RTP timestamp, else the newest earlier one.
function drawLoop(video, overlay, results) {
  if (!("requestVideoFrameCallback" in video)) return;
  const onFrame = (_now, meta) => {
    const ts = meta.rtpTimestamp;
    let result = results.get(ts);
    if (result === undefined && ts !== undefined) {
      for (const [key, r] of results) if (key <= ts) result = r;  // Map keeps pts order
    }
    drawBoxes(overlay, meta.width, meta.height, result);
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
}

export function drawBoxes(canvas, width, height, result) {
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;
    canvas.height = height;
  }
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, width, height);
  if (!result) return;
  ctx.lineWidth = Math.max(2, width / 320);
  ctx.font = `${Math.max(12, width / 50)}px system-ui, sans-serif`;
  for (const box of result.boxes) {
    const [x1, y1, x2, y2] = box.xyxy;  // normalised to the frame
    const hue = (box.track_id * 67) % 360;
    ctx.strokeStyle = ctx.fillStyle = `hsl(${hue} 90% 50%)`;
    ctx.strokeRect(x1 * width, y1 * height, (x2 - x1) * width, (y2 - y1) * height);
    ctx.fillText(`${box.label} #${box.track_id} ${box.score.toFixed(2)}`, x1 * width,
      Math.max(12, y1 * height - 4));
    window.mobieyeBoxesDrawn += 1;
    if (!window.mobieyeLabelsDrawn.includes(box.label)) window.mobieyeLabelsDrawn.push(box.label);
  }
}

export function waitFor(probe, timeoutMs) {
  return new Promise((resolve) => {
    const start = performance.now();
    const tick = () => {
      if (probe()) resolve(true);
      else if (performance.now() - start > timeoutMs) resolve(false);
      else setTimeout(tick, 50);
    };
    tick();
  });
}
