// Three pages of headless Chromium open the demo in one room, build a full
// WebRTC mesh and chat over data channels; then the server is killed with
// SIGKILL and restarted, and every page must come back by itself.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { join } from "node:path";

import { eventually, launchChromium, sample, scratch, startServer, total } from "./harness.mjs";

const PAGES = 3;
const ROOM = "e2e-mesh";

let tmp;
let server;
let browser;
const pages = [];

before(async () => {
  tmp = scratch();
  server = await startServer({ dir: tmp.dir });
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await server?.stop("SIGKILL");
  tmp?.remove();
});

async function json(path) {
  const res = await fetch(server.base + path);
  assert.equal(res.status, 200, `${path} answered ${res.status}`);
  return res.json();
}

async function metrics() {
  return (await fetch(`${server.base}/metrics`)).text();
}

/** What each page sees, for failure messages. */
async function describe(all) {
  const states = await Promise.all(
    all.map((p) => p.evaluate(() => ({ client: window.chatsubo.client.state, peers: window.chatsubo.mesh.peers() }))),
  );
  return JSON.stringify(states);
}

function openChannels(page) {
  return page.evaluate(() => window.chatsubo.mesh.peers().filter((p) => p.channelOpen).length);
}

test("three pages build a full mesh, chat both ways, and survive a server crash", { timeout: 240_000 }, async () => {
  // --- a full mesh ---------------------------------------------------------
  for (let i = 0; i < PAGES; i++) {
    const context = await browser.newContext({ permissions: ["camera", "microphone"] });
    const page = await context.newPage();
    page.on("pageerror", (error) => console.error(`page${i}:`, error));
    await page.goto(`${server.base}/?room=${ROOM}&name=page${i}`);
    pages.push(page);
  }
  for (const page of pages) {
    await eventually(async () => (await openChannels(page)) === PAGES - 1, 60_000, "a full mesh", () => describe(pages));
  }

  // --- chat over data channels, every direction ----------------------------
  for (let i = 0; i < PAGES; i++) {
    await pages[i].fill("#text", `hello from page${i}`);
    await pages[i].click("#say button");
  }
  for (let i = 0; i < PAGES; i++) {
    const expected = [...Array(PAGES).keys()].filter((j) => j !== i).map((j) => `hello from page${j}`).sort();
    await pages[i].waitForFunction((n) => window.chatsubo.received.length >= n, PAGES - 1, { timeout: 20_000 });
    const got = await pages[i].evaluate(() => window.chatsubo.received.map((m) => m.text).sort());
    assert.deepEqual(got, expected, `page${i} received every other page's message`);
  }

  // --- what the clients reported reaches the server's metrics --------------
  const links = PAGES * (PAGES - 1);
  await eventually(
    async () => total(await metrics(), "chatsubo_peer_connections_total", { outcome: "connected" }) === links,
    20_000,
    `${links} connected peer connections in /metrics`,
  );
  const text = await metrics();
  assert.equal(total(text, "chatsubo_peer_connections_total", { outcome: "failed" }), 0);
  // Every link reported its path: on loopback with no STUN or TURN, host.
  assert.equal(total(text, "chatsubo_peer_connections_total", { outcome: "connected", path: "host" }), links);
  assert.ok(sample(text, "chatsubo_peer_connect_seconds_count") >= links);
  assert.ok(sample(text, "chatsubo_client_connect_seconds_count") >= PAGES);

  // --- the sessions are in the store ---------------------------------------
  const before = await eventually(async () => {
    const { sessions } = await json(`/api/sessions?room=${ROOM}`);
    return sessions.length === PAGES && sessions;
  }, 20_000, "three sessions in /api/sessions");
  const crashed = before.map((s) => s.sessionId);
  assert.ok(before.every((s) => s.endedAt === null && s.closeReason === null));

  if (process.env.SCREENSHOT_DIR) {
    await pages[0].screenshot({ path: join(process.env.SCREENSHOT_DIR, "demo.png"), fullPage: true });
    await pages[1].setViewportSize({ width: 390, height: 844 });
    await pages[1].screenshot({ path: join(process.env.SCREENSHOT_DIR, "demo-phone.png"), fullPage: true });
  }

  // --- kill -9 and restart on the same port and store ----------------------
  await server.stop("SIGKILL");
  server = await startServer({ dir: tmp.dir, port: server.port });

  for (const page of pages) {
    await page.waitForFunction(() => window.chatsubo.client.state === "open" && window.chatsubo.client.joined, null, {
      timeout: 60_000,
    });
  }
  await eventually(
    async () => sample(await metrics(), 'chatsubo_client_reconnects_total{outcome="success"}') === PAGES,
    30_000,
    "every page's successful reconnect counted by the restarted server",
  );
  for (const page of pages) {
    await eventually(async () => (await openChannels(page)) === PAGES - 1, 60_000, "the mesh rebuilt after the restart", () =>
      describe(pages),
    );
  }
  for (const id of crashed) {
    const session = await json(`/api/sessions/${id}`);
    assert.equal(session.closeReason, "server_crash", `session ${id} closed as a crash`);
    assert.ok(session.endedAt, "a crashed session has an end time");
  }

  if (process.env.SCREENSHOT_DIR) {
    const dashboard = await (await browser.newContext()).newPage();
    await dashboard.setViewportSize({ width: 1100, height: 1200 });
    await dashboard.goto(`${server.base}/dashboard`);
    await dashboard.waitForSelector('[data-testid="sessions"] tr td:not([colspan])', { timeout: 20_000 });
    await dashboard.screenshot({ path: join(process.env.SCREENSHOT_DIR, "dashboard.png"), fullPage: true });
  }
});
