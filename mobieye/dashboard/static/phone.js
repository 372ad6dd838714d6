// The phone page: this browser's camera streamed to a worker (the dashboard picks the least
// loaded one), previewed locally with the newest result's boxes from the data channel.

import { drawBoxes, iceConfig, waitFor } from "./live.js";

const $ = (id) => document.getElementById(id);
const status = (text) => ($("phone-status").textContent = text);
window.mobieyePhoneResults = 0;
window.mobieyePhoneStream = null;
window.mobieyePhoneLatencies = 0;
const KEEP_SENT = 600;  // frames whose send time is kept: 20 s at 30 fps

function noteSendTimes(sender, sentAt) {
  const { readable, writable } = sender.createEncodedStreams();
  const note = new TransformStream({
    transform(frame, controller) {
      const ts = frame.getMetadata().rtpTimestamp ?? frame.timestamp;
      sentAt.set(ts >>> 0, performance.now());
      if (sentAt.size > KEEP_SENT) sentAt.delete(sentAt.keys().next().value);
      controller.enqueue(frame);
    },
  });
  readable.pipeThrough(note).pipeTo(writable);
}

async function start() {
  const video = $("preview");
  const camera = await navigator.mediaDevices.getUserMedia({
    video: { width: { ideal: 640 }, height: { ideal: 480 } },
    audio: false,
  });
  video.srcObject = camera;
  await video.play().catch(() => {});

  // Encoded transforms let the page note when each frame left the encoder, by its RTP
  // timestamp: a result's pts is that timestamp, so capture-to-result latency is measurable
  // here and reported to the worker like an edge agent does (it feeds the dashboard's chart).
  const transforms = "createEncodedStreams" in RTCRtpSender.prototype;
  const ice = await iceConfig();
  const pc = new RTCPeerConnection({ ...ice, encodedInsertableStreams: transforms });
  const sentAt = new Map();  // RTP timestamp -> performance.now() when encoded
  for (const track of camera.getVideoTracks()) {
    const { sender } = pc.addTransceiver(track, { direction: "sendonly" });
    if (transforms) noteSendTimes(sender, sentAt);
  }
  const pending = [];  // latencies (ms) not reported yet
  const channel = pc.createDataChannel("mobieye");
  setInterval(() => {
    if (channel.readyState !== "open" || !pending.length) return;
    channel.send(JSON.stringify({ type: "latency", samples_ms: pending.splice(0) }));
  }, 1000);
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
      const sent = sentAt.get(msg.pts % 2 ** 32);
      if (sent !== undefined) {
        pending.push(Math.round((performance.now() - sent) * 100) / 100);
        window.mobieyePhoneLatencies += 1;
      }
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
