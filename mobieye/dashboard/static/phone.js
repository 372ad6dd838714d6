// The phone page: this browser's camera streamed to a worker (the dashboard picks the least
// loaded one), previewed locally with the newest result's boxes from the data channel.

import { drawBoxes, waitFor } from "./live.js";

const $ = (id) => document.getElementById(id);
const status = (text) => ($("phone-status").textContent = text);
window.mobieyePhoneResults = 0;
window.mobieyePhoneStream = null;

async function start() {
  const video = $("preview");
  const camera = await navigator.mediaDevices.getUserMedia({
    video: { width: { ideal: 640 }, height: { ideal: 480 } },
    audio: false,
  });
  video.srcObject = camera;
  await video.play().catch(() => {});

  const pc = new RTCPeerConnection({ iceServers: [] });
  for (const track of camera.getVideoTracks()) pc.addTransceiver(track, { direction: "sendonly" });
  const channel = pc.createDataChannel("mobieye");
  let latest = null;  // the preview is local: no RTP timestamps to match, the newest result wins
  channel.onopen = () => {
    const settings = camera.getVideoTracks()[0].getSettings();
    channel.send(JSON.stringify({
      type: "hello", stream_id: "phone", fps: settings.frameRate || 30,
      width: settings.width || 0, height: settings.height || 0, source: "browser camera",
    }));
  };
  channel.onmessage = (ev) => {
    const msg = JSON.parse(ev.data);
    if (msg.type === "welcome") {
      window.mobieyePhoneStream = msg.stream_id;
      status(`streaming as ${msg.stream_id} to worker ${msg.worker_id} (${msg.model})`);
    } else if (msg.type === "result") {
      latest = msg;
      window.mobieyePhoneResults += 1;
    }
  };

  await pc.setLocalDescription(await pc.createOffer());
  await waitFor(() => pc.iceGatheringState === "complete", 2000);  // no trickle: one round
  status("asking the dashboard for a worker\u2026");
  const r = await fetch("/api/phone/offer", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ sdp: pc.localDescription.sdp, type: pc.localDescription.type }),
  });
  const answer = await r.json();
  if (!r.ok) throw new Error(answer.error ?? `refused (${r.status})`);
  await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
  status(`connecting to worker ${answer.worker_id ?? "?"}\u2026`);
  pc.onconnectionstatechange = () => {
    if (["failed", "closed"].includes(pc.connectionState)) status(`stream ${pc.connectionState}`);
  };

  // Redraw the newest boxes on every preview frame.
  const onFrame = (_now, meta) => {
    drawBoxes($("overlay"), meta.width, meta.height, latest);
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
}

start().catch((err) => status(`failed: ${err.message ?? err}`));
