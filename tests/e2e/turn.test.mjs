// Two pages of headless Chromium that may use only relayed candidates
// (the demo's ?relay=1: iceTransportPolicy "relay") build their data
// channel through a real coturn, with nothing but the credentials the
// server handed out. Then, with credentials that live one second, a new
// link works only because the client asks for fresh ones (`ice-servers`):
// the same pages with that request held back never connect.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { eventually, launchChromium, sample, scratch, startCoturn, startServer, total } from "./harness.mjs";

let tmp;
let coturn;
let browser;
const servers = [];

before(async () => {
  tmp = scratch();
  coturn = await startCoturn({ dir: `${tmp.dir}/coturn` });
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  for (const server of servers) await server.stop("SIGKILL");
  await coturn?.stop();
  tmp?.remove();
});

async function chatsubo(name, extra = []) {
  const args = ["--turn-url", coturn.url, "--turn-secret-file", coturn.secretFile, ...extra];
  const server = await startServer({ dir: `${tmp.dir}/${name}`, args });
  servers.push(server);
  return server;
}

async function metrics(server) {
  return (await fetch(`${server.base}/metrics`)).text();
}

const ICE_SERVERS_IN = 'chatsubo_messages_total{direction="in",type="ice-servers"}';

/**
 * Two demo pages with only relayed candidates, connected to the server but
 * not yet in a room. With `holdRefresh`, every `ice-servers` request the
 * page sends is dropped before it leaves the page.
 */
async function relayPages(server, holdRefresh = false) {
  const pages = [];
  for (const name of ["ann", "bob"]) {
    const context = await browser.newContext({ permissions: ["camera", "microphone"] });
    if (holdRefresh) {
      await context.addInitScript(() => {
        const send = WebSocket.prototype.send;
        WebSocket.prototype.send = function (data) {
          if (typeof data === "string" && JSON.parse(data).type === "ice-servers") return undefined;
          return send.call(this, data);
        };
      });
    }
    const page = await context.newPage();
    page.on("pageerror", (error) => console.error(`${name}:`, error));
    await page.goto(`${server.base}/?relay=1&name=${name}`);
    await page.evaluate(() => window.chatsubo.client.connect());
    await page.waitForFunction(() => window.chatsubo.client.state === "open", null, { timeout: 20_000 });
    pages.push(page);
  }
  return pages;
}

/** Both pages join `room` from the demo's form, one after the other. */
async function join(pages, room) {
  for (const page of pages) {
    await page.fill("#room", room);
    await page.click("#join button");
    await page.waitForFunction(() => window.chatsubo.client.joined, null, { timeout: 20_000 });
  }
}

/** The TURN entry of what the page's client holds now. */
function turnEntry(page) {
  return page.evaluate(() => window.chatsubo.client.iceServers?.find((s) => String(s.urls).startsWith("turn:")));
}

function describe(pages) {
  return Promise.all(pages.map((p) => p.evaluate(() => JSON.stringify(window.chatsubo.mesh.peers())))).then(String);
}

async function channelsOpen(pages) {
  for (const page of pages) {
    await eventually(
      () => page.evaluate(() => window.chatsubo.mesh.peers().some((p) => p.channelOpen)),
      30_000,
      "a data channel through coturn",
      () => describe(pages),
    );
  }
}

/** ann says hello over the data channel and bob hears it. */
async function chat(pages, text) {
  await pages[0].fill("#text", text);
  await pages[0].click("#say button");
  await pages[1].waitForFunction((t) => window.chatsubo.received.some((m) => m.text === t), text, { timeout: 10_000 });
}

test("two relay-only pages connect through coturn with the welcome's credentials and report path relay", { timeout: 120_000 }, async () => {
  const server = await chatsubo("relay");
  const pages = await relayPages(server);
  for (const page of pages) {
    const turn = await turnEntry(page);
    assert.deepEqual(turn?.urls, [coturn.url], "the welcome named coturn");
    assert.match(turn.username, /^\d+:p_/, "with a REST API username");
  }
  await join(pages, "turn");
  await channelsOpen(pages);
  await chat(pages, "hello through the relay");

  // The links really use relay-only configurations with the server's servers.
  for (const page of pages) {
    const config = await page.evaluate(() => {
      const { pc } = [...window.chatsubo.mesh.links.values()][0];
      const c = pc.getConfiguration();
      return { policy: c.iceTransportPolicy, urls: c.iceServers.flatMap((s) => s.urls) };
    });
    assert.deepEqual(config, { policy: "relay", urls: [coturn.url] });
  }
  // Only the welcome's credentials: nobody asked for others.
  assert.equal(sample(await metrics(server), ICE_SERVERS_IN), 0);

  // Each side's telemetry says relay: stored with its session…
  for (const page of pages) {
    const id = await page.evaluate(() => window.chatsubo.client.sessionId);
    await eventually(async () => {
      const session = await (await fetch(`${server.base}/api/sessions/${id}`)).json();
      return session.events.some(
        (e) => e.kind === "telemetry" && e.event === "peer-connection" && e.outcome === "connected" && e.path === "relay",
      );
    }, 20_000, `session ${id} holding a peer-connection with path relay`);
    assert.equal(await page.evaluate(() => window.chatsubo.mesh.peers()[0].path), "relay");
  }
  // …counted in /metrics and /api/stats…
  const text = await metrics(server);
  assert.equal(total(text, "chatsubo_peer_connections_total", { outcome: "connected", path: "relay" }), 2);
  assert.equal(total(text, "chatsubo_peer_connections_total", { outcome: "connected" }), 2, "no other path");
  const stats = await (await fetch(`${server.base}/api/stats`)).json();
  assert.equal(stats.peerConnections, 2, JSON.stringify(stats));
  assert.ok(stats.relayedConnections >= 2, JSON.stringify(stats));
  assert.equal(stats.failedPeerConnections, 0, JSON.stringify(stats));

  // …and on /dashboard's "Peer connections" card.
  const dashboard = await (await browser.newContext()).newPage();
  await dashboard.goto(`${server.base}/dashboard`);
  const card = await eventually(async () => {
    const text = await dashboard.locator('[data-testid="peer-stats"]').innerText();
    return text.includes("through TURN") && text;
  }, 20_000, "the Peer connections card");
  const values = Object.fromEntries(
    await dashboard.locator('[data-testid="peer-stats"] > div').evaluateAll((cells) =>
      cells.map((c) => [c.querySelector(".muted").textContent, c.querySelector(".stat").textContent]),
    ),
  );
  assert.equal(values["success rate"], "100 %", card);
  assert.equal(values["through TURN"], "100 %", card);
  assert.match(values["median time to connect"], /^\d+(\.\d)? (ms|s)$/, card);
  assert.match(values["p95 time to connect"], /^\d+(\.\d)? (ms|s)$/, card);
});

test("once the welcome's credentials expired, a new link connects only because the client refreshed them", { timeout: 180_000 }, async () => {
  const server = await chatsubo("expired", ["--turn-ttl-secs", "1"]);

  /** Opens two pages, waits until coturn counts their welcome's credentials as expired, then joins them. */
  async function afterExpiry(room, holdRefresh) {
    const pages = await relayPages(server, holdRefresh);
    const expiries = await Promise.all(pages.map(async (p) => Number((await turnEntry(p)).username.split(":")[0])));
    // coturn accepts a username through the second its expiry names. The
    // one fixed wait of these tests: the expiry is the point.
    const wait = (Math.max(...expiries) + 1) * 1000 + 100 - Date.now();
    assert.ok(wait < 3000, `1 s credentials expire within 3 s, not ${wait} ms`);
    await new Promise((r) => setTimeout(r, Math.max(0, wait)));
    const before = sample(await metrics(server), ICE_SERVERS_IN);
    await join(pages, room);
    return { pages, before };
  }

  // Control: the request for fresh credentials never leaves the pages.
  const held = await afterExpiry("expired-held", true);
  await eventually(
    async () => total(await metrics(server), "chatsubo_peer_connections_total", { outcome: "failed" }) >= 2,
    40_000,
    "both held-back pages giving up on their link",
    () => describe(held.pages),
  );
  for (const page of held.pages) {
    assert.equal(await page.evaluate(() => window.chatsubo.mesh.peers().some((p) => p.channelOpen)), false);
  }
  let text = await metrics(server);
  assert.equal(sample(text, ICE_SERVERS_IN), held.before, "no ice-servers request reached the server");
  assert.equal(total(text, "chatsubo_peer_connections_total", { outcome: "connected" }), 0);
  for (const page of held.pages) await page.context().close();

  // The same, with the client free to refresh: it asks before each new link.
  const fresh = await afterExpiry("expired", false);
  await channelsOpen(fresh.pages);
  await chat(fresh.pages, "hello with fresh credentials");
  text = await eventually(async () => {
    const t = await metrics(server);
    return total(t, "chatsubo_peer_connections_total", { outcome: "connected", path: "relay" }) === 2 && t;
  }, 20_000, "both refreshed links counted as relayed");
  assert.ok(
    sample(text, ICE_SERVERS_IN) >= fresh.before + 2,
    `each page asked for fresh credentials (${sample(text, ICE_SERVERS_IN) - fresh.before} requests)`,
  );
});
