// The demo page: join a room, see the peers and the state of each link, chat
// over WebRTC data channels, optionally share camera and microphone.
import { Mesh, SignalingClient, reportUncaughtErrors } from "/chatsubo-client.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const client = new SignalingClient();
// ICE servers come from the signaling server. `?relay=1` allows only
// relayed candidates: every link goes through TURN (a check of the relay).
const mesh = new Mesh(client, params.get("relay") === "1" ? { rtcConfig: { iceTransportPolicy: "relay" } } : {});
reportUncaughtErrors(client);
window.chatsubo = { client, mesh, received: [] };

$("room").value = params.get("room") ?? "";
$("name").value = params.get("name") ?? localStorage.getItem("chatsubo.name") ?? "";

client.addEventListener("state", ({ detail }) => {
  const labels = { connecting: "connecting…", open: "connected", reconnecting: "reconnecting…", closed: "disconnected" };
  $("status").textContent = labels[detail.state] ?? detail.state;
  $("status").dataset.state = detail.state;
});
client.addEventListener("rtt", ({ detail }) => ($("rtt").textContent = `RTT ${detail.ms} ms`));
client.addEventListener("joined", ({ detail }) => {
  $("join").hidden = true;
  $("call").hidden = false;
  $("room-name").textContent = detail.room;
  $("me").textContent = client.displayName || "anonymous";
  $("my-id").textContent = detail.peerId;
  renderPeers();
});
client.addEventListener("server-error", ({ detail }) => note(`Server: ${detail.code} — ${detail.message}`));
mesh.addEventListener("peer", renderPeers);
mesh.addEventListener("peer-removed", ({ detail }) => {
  renderPeers();
  document.querySelector(`video[data-peer="${CSS.escape(detail.peerId)}"]`)?.remove();
});
mesh.addEventListener("message", ({ detail }) => {
  window.chatsubo.received.push(detail);
  const name = mesh.displayNames.get(detail.from) || detail.from.slice(0, 10);
  addMessage(name, detail.text);
});
mesh.addEventListener("track", ({ detail }) => showVideo(detail.peerId, detail.streams[0]));

$("join").addEventListener("submit", (event) => {
  event.preventDefault();
  start($("room").value.trim(), $("name").value.trim());
});
$("say").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("text").value.trim();
  if (!text) return;
  const sent = mesh.broadcast(text);
  addMessage("you", sent ? text : `${text} (nobody connected yet)`);
  $("text").value = "";
});
$("leave").addEventListener("click", () => {
  client.leave();
  mesh.close();
  $("call").hidden = true;
  $("join").hidden = false;
});
$("media").addEventListener("click", toggleMedia);

if (params.get("room")) start(params.get("room"), params.get("name") ?? "");

function start(room, name) {
  if (name) localStorage.setItem("chatsubo.name", name);
  const url = new URL(location);
  url.searchParams.set("room", room);
  if (name) url.searchParams.set("name", name);
  history.replaceState(null, "", url);
  client.join(room, name || undefined);
  if (client.state === "idle") client.connect();
}

function renderPeers() {
  const list = $("peers");
  list.replaceChildren();
  const peers = mesh.peers();
  if (peers.length === 0) {
    const li = document.createElement("li");
    li.className = "muted";
    li.textContent = "Nobody else yet. Share this page's address.";
    list.append(li);
  }
  for (const peer of peers) {
    const li = document.createElement("li");
    li.dataset.peer = peer.peerId;
    li.dataset.state = peer.state;
    const name = document.createElement("span");
    name.textContent = peer.displayName || peer.peerId.slice(0, 12);
    const state = document.createElement("span");
    state.className = "badge";
    state.dataset.state = peer.state;
    state.textContent = [peer.state, peer.channelOpen && "chat open", peer.path === "relay" && "via TURN"]
      .filter(Boolean)
      .join(" · ");
    li.append(name, state);
    list.append(li);
  }
}

function addMessage(who, text) {
  const li = document.createElement("li");
  const b = document.createElement("strong");
  b.textContent = `${who}: `;
  li.append(b, document.createTextNode(text));
  $("messages").append(li);
  li.scrollIntoView({ block: "nearest" });
}

function note(text) {
  const li = document.createElement("li");
  li.className = "muted";
  li.textContent = text;
  $("messages").append(li);
}

async function toggleMedia() {
  if (mesh.localStream) {
    mesh.localStream.getTracks().forEach((t) => t.stop());
    mesh.setLocalStream(null);
    document.querySelector('video[data-peer="me"]')?.remove();
    $("media").textContent = "Start camera & mic";
    return;
  }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
    mesh.setLocalStream(stream);
    showVideo("me", stream, true);
    $("media").textContent = "Stop camera & mic";
  } catch (error) {
    client.reportError(error?.name === "NotAllowedError" ? "GETUSERMEDIA_DENIED" : "GETUSERMEDIA_FAILED", error);
    note(`Camera/microphone unavailable: ${error?.message ?? error}`);
  }
}

function showVideo(peerId, stream, muted = false) {
  let video = document.querySelector(`video[data-peer="${CSS.escape(peerId)}"]`);
  if (!video) {
    video = document.createElement("video");
    video.dataset.peer = peerId;
    video.autoplay = true;
    video.playsInline = true;
    video.muted = muted;
    $("videos").append(video);
  }
  video.srcObject = stream;
}
