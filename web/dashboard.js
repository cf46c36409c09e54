// The analytics page: the last hour's numbers, peer connections, live rooms,
// recent sessions and churn, from /api.
const $ = (id) => document.getElementById(id);
const COLORS = { joins: "#1a7f37", leaves: "#cf222e", rejections: "#9a6700", resumes: "#1f6feb" };
let token = sessionStorage.getItem("chatsubo.token");

async function api(path) {
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const res = await fetch(path, { headers });
  if (res.status === 401) {
    $("auth").hidden = false;
    throw new Error("the API token is needed");
  }
  if (!res.ok) throw new Error(`${path}: ${res.status}`);
  return res.json();
}

$("auth").addEventListener("submit", (event) => {
  event.preventDefault();
  token = $("token").value;
  sessionStorage.setItem("chatsubo.token", token);
  $("auth").hidden = true;
  refresh();
});

async function refresh() {
  const hourAgo = new Date(Date.now() - 3600_000).toISOString();
  try {
    const [rooms, sessions, churn, stats] = await Promise.all([
      api("/api/rooms?active=true"),
      api("/api/sessions?limit=25"),
      api(`/api/churn?since=${encodeURIComponent(hourAgo)}&bucket=60`),
      api(`/api/stats?since=${encodeURIComponent(hourAgo)}`),
    ]);
    renderStats(stats);
    renderPeerConnections(stats);
    renderRooms(rooms.rooms);
    renderSessions(sessions.sessions);
    renderChurn(churn);
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    $("updated").textContent = String(error.message ?? error);
  }
}

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text ?? "–";
  return td;
}

function renderStats(s) {
  statGrid($("stats"), [
    ["sessions", s.sessions],
    ["median length", duration(s.p50DurationMs)],
    ["p95 length", duration(s.p95DurationMs)],
    ["resumes", s.reconnects],
    ["room full", s.roomFullRejections],
    ["peak connections", s.peakConnections],
  ]);
}

/** What the browsers reported about their WebRTC links, over the same window. */
function renderPeerConnections(s) {
  const connected = s.peerConnections ?? 0;
  const failed = s.failedPeerConnections ?? 0;
  const relayed = s.relayedConnections ?? 0;
  statGrid($("peer-stats"), [
    ["success rate", percent(connected, connected + failed)],
    ["median time to connect", duration(s.p50PeerConnectMs)],
    ["p95 time to connect", duration(s.p95PeerConnectMs)],
    ["through TURN", percent(relayed, connected)],
  ]);
  $("peer-counts").textContent = `${connected} connected, ${failed} failed, ${relayed} of the connected through TURN`;
}

function statGrid(grid, items) {
  grid.replaceChildren(
    ...items.map(([label, value]) => {
      const div = document.createElement("div");
      const v = document.createElement("div");
      v.className = "stat";
      v.textContent = value ?? "–";
      const l = document.createElement("div");
      l.className = "muted";
      l.textContent = label;
      div.append(v, l);
      return div;
    }),
  );
}

function renderRooms(rooms) {
  const rows = rooms.map((r) => {
    const tr = document.createElement("tr");
    tr.append(cell(r.room), cell(r.activePeers), cell(r.peakPeers), cell(r.sessions), cell(time(r.lastSeen)));
    return tr;
  });
  if (rows.length === 0) rows.push(emptyRow(5, "No active rooms."));
  $("rooms").replaceChildren(...rows);
}

function renderSessions(sessions) {
  const rows = sessions.map((s) => {
    const tr = document.createElement("tr");
    tr.title = s.sessionId;
    tr.append(
      cell(time(s.connectedAt)),
      cell(s.room),
      cell(s.displayName),
      cell(s.endedAt ? duration(s.durationMs) : "open"),
      cell(s.closeReason),
      cell(`${s.messagesIn}/${s.messagesOut}`),
      cell(s.errors),
    );
    return tr;
  });
  if (rows.length === 0) rows.push(emptyRow(7, "No sessions yet."));
  $("sessions").replaceChildren(...rows);
}

function emptyRow(span, text) {
  const tr = document.createElement("tr");
  const td = cell(text);
  td.colSpan = span;
  td.className = "muted";
  tr.append(td);
  return tr;
}

function renderChurn(churn) {
  const canvas = $("churn");
  const ctx = canvas.getContext("2d");
  const w = canvas.width;
  const h = canvas.height;
  const pad = 28;
  ctx.clearRect(0, 0, w, h);
  const buckets = churn.buckets;
  const series = Object.keys(COLORS);
  const max = Math.max(1, ...buckets.flatMap((b) => series.map((k) => b[k])));
  ctx.strokeStyle = "#8886";
  ctx.fillStyle = getComputedStyle(document.body).color;
  ctx.font = "12px system-ui";
  ctx.beginPath();
  ctx.moveTo(pad, pad / 2);
  ctx.lineTo(pad, h - pad);
  ctx.lineTo(w - 4, h - pad);
  ctx.stroke();
  ctx.fillText(String(max), 2, pad / 2 + 8);
  ctx.fillText("0", 10, h - pad);
  if (buckets.length > 0) {
    // Grouped bars: one group per bucket, one bar per series.
    const t0 = Date.parse(buckets[0].start);
    const span = Math.max(1, Date.parse(buckets[buckets.length - 1].start) - t0);
    const slots = Math.max(1, Math.round(span / (churn.bucketSeconds * 1000)) + 1);
    const slot = (w - pad - 8) / slots;
    const bar = Math.max(1, (slot * 0.8) / series.length);
    const y = (v) => (v / max) * (h - pad * 1.5);
    for (const b of buckets) {
      const index = Math.round((Date.parse(b.start) - t0) / (churn.bucketSeconds * 1000));
      series.forEach((key, k) => {
        ctx.fillStyle = COLORS[key];
        const height = y(b[key]);
        ctx.fillRect(pad + 1 + index * slot + k * bar, h - pad - height, bar, height);
      });
    }
    ctx.fillStyle = getComputedStyle(document.body).color;
    ctx.fillText(new Date(t0).toLocaleTimeString(), pad, h - 8);
    if (slots > 1) ctx.fillText(new Date(t0 + span).toLocaleTimeString(), w - 80, h - 8);
  }
  $("legend").replaceChildren(
    ...series.map((key) => {
      const span = document.createElement("span");
      span.style.color = COLORS[key];
      span.textContent = `■ ${key}  `;
      return span;
    }),
  );
}

function time(iso) {
  return iso ? new Date(iso).toLocaleTimeString() : "–";
}

function percent(part, whole) {
  if (!(whole > 0)) return "–";
  const share = (100 * part) / whole;
  return `${Number.isInteger(share) ? share : share.toFixed(1)} %`;
}

function duration(ms) {
  if (ms == null) return "–";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 120_000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.round(ms / 60_000)} min`;
}

refresh();
setInterval(refresh, 5000);
