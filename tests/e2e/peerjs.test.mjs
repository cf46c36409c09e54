// The real PeerJS client (npm `peerjs`, pinned in package.json) against
// Chatsubo's PeerJS endpoint under /peerjs: two headless Chromium pages of an
// app served from its own origin (so the id request is a real CORS request)
// get their ids, open a reliable DataConnection through the signaling and
// talk both ways; a third client claiming a connected id is refused; and the
// two sessions show in /api/sessions?protocol=peerjs, with durations once
// the peers are destroyed.
//
// Development only: PEERJS_SERVER=http://127.0.0.1:PORT runs the PeerJS part
// against another server with the same layout (the reference peerjs-server,
// `peerjs --port PORT --path /peerjs`) and skips the /api part.
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import { eventually, launchChromium, scratch, startServer } from "./harness.mjs";

const PEERJS = fileURLToPath(new URL("./node_modules/peerjs/dist/peerjs.min.js", import.meta.url));
const EXTERNAL = process.env.PEERJS_SERVER;

let tmp;
let server;
let app;
let browser;

before(async () => {
  if (EXTERNAL) {
    server = { base: new URL(EXTERNAL).origin, port: Number(new URL(EXTERNAL).port), stop() {} };
  } else {
    tmp = scratch();
    server = await startServer({ dir: tmp.dir });
  }
  app = await serveApp();
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await new Promise((resolve) => (app ? app.close(resolve) : resolve()));
  await server?.stop("SIGKILL");
  tmp?.remove();
});

/** The PeerJS app's own origin: one HTML page on another port of 127.0.0.1. */
function serveApp() {
  const html = "<!doctype html><meta charset=utf-8><link rel=icon href='data:,'><title>PeerJS app</title><h1>PeerJS app</h1>";
  const http = createServer((req, res) => {
    if (req.url !== "/") return res.writeHead(404).end();
    res.writeHead(200, { "Content-Type": "text/html; charset=utf-8" }).end(html);
  });
  return new Promise((resolve) =>
    http.listen(0, "127.0.0.1", () => {
      http.origin = `http://127.0.0.1:${http.address().port}`;
      resolve(http);
    }),
  );
}

/**
 * A page of the app in its own context with the PeerJS client loaded and a
 * Peer started (`id` undefined: the server hands one out). What the Peer
 * reports is kept in `window.log`: its id once open, every `error` event,
 * the connection's state and the data received.
 */
async function peerPage(name, id) {
  const context = await browser.newContext({ permissions: ["camera", "microphone"] });
  const page = await context.newPage();
  page.name = name;
  page.problems = [];
  page.on("console", (m) => m.type() === "error" && page.problems.push(m.text()));
  page.on("pageerror", (error) => page.problems.push(String(error)));
  page.on("requestfailed", (r) => page.problems.push(`${r.method()} ${r.url()} failed: ${r.failure()?.errorText}`));
  // What the server answered under /peerjs (the id request, when no id is given).
  page.responses = [];
  page.on("response", (r) => new URL(r.url()).pathname.startsWith("/peerjs") && page.responses.push(r));
  await page.goto(`${app.origin}/`);
  await page.addScriptTag({ path: PEERJS });
  const options = { host: "127.0.0.1", port: server.port, path: "/peerjs", secure: false, config: { iceServers: [] } };
  await page.evaluate(
    ({ id, options }) => {
      const log = (window.log = { id: null, errors: [], connection: null, received: [] });
      const peer = (window.peer = id ? new peerjs.Peer(id, options) : new peerjs.Peer(options));
      peer.on("open", (id) => (log.id = id));
      peer.on("error", (e) => log.errors.push(`${e.type}: ${e.message}`));
      window.wire = (conn) => {
        window.conn = conn;
        log.connection = "offered";
        conn.on("open", () => (log.connection = "open"));
        conn.on("close", () => (log.connection = "closed"));
        conn.on("error", (e) => log.errors.push(`connection ${e.type}: ${e.message}`));
        conn.on("data", (data) => log.received.push(data));
      };
      peer.on("connection", window.wire);
    },
    { id, options },
  );
  return page;
}

const state = (page) => page.evaluate(() => ({ ...window.log, open: window.peer.open, disconnected: window.peer.disconnected }));

/** Every page's PeerJS state, errors and console errors, for failure messages. */
async function describe(pages) {
  const all = await Promise.all(
    pages.map(async (p) => ({
      page: p.name,
      ...(await state(p)),
      problems: p.problems,
      responses: p.responses.map((r) => `${r.status()} ${r.request().method()} ${new URL(r.url()).pathname}`),
    })),
  );
  return JSON.stringify(all);
}

/** Waits until `ready(state)` holds on `page`; a PeerJS error fails at once. */
async function until(page, ready, what, pages) {
  const s = await eventually(async () => {
    const s = await state(page);
    return (s.errors.length > 0 || ready(s)) && s;
  }, 60_000, `${page.name}: ${what}`, () => describe(pages));
  assert.deepEqual(s.errors, [], `${page.name} reported PeerJS errors while waiting for ${what}: ${await describe(pages)}`);
  return s;
}

async function sessions() {
  const res = await fetch(`${server.base}/api/sessions?protocol=peerjs`);
  if (res.status !== 200) throw new Error(`/api/sessions?protocol=peerjs answered ${res.status}: ${await res.text()}`);
  return (await res.json()).sessions;
}

test("two pages of the real PeerJS client talk over a DataConnection signaled through /peerjs", { timeout: 180_000 }, async (t) => {
  // --- ids from GET /peerjs/peerjs/id, cross-origin; open on the WebSocket ---
  const a = await peerPage("A");
  const b = await peerPage("B");
  const pages = [a, b];
  const ids = [];
  for (const page of pages) {
    const { id } = await until(page, (s) => s.open && s.id, "the Peer open with an id from the server", pages);
    ids.push(id);
    const res = page.responses.find((r) => new URL(r.url()).pathname === "/peerjs/peerjs/id");
    assert.equal(await res.text(), id, "the id is the whole body of GET /peerjs/peerjs/id");
    assert.equal(res.headers()["access-control-allow-origin"], app.origin, "the id request's CORS answer names the app's origin");
  }
  const [aId, bId] = ids;
  assert.notEqual(aId, bId);
  const openAt = Date.now();

  // --- A connects to B: OFFER, ANSWER and CANDIDATEs through the server ------
  await a.evaluate((bId) => window.wire(window.peer.connect(bId, { reliable: true })), bId);
  for (const page of pages) await until(page, (s) => s.connection === "open", "the DataConnection open", pages);
  assert.equal(await b.evaluate(() => window.conn.peer), aId, "B's connection comes from A's id");

  // --- a message each way over the data channel -----------------------------
  await a.evaluate((aId) => window.conn.send({ from: aId, text: "hello from A", n: [1, 2, 3] }), aId);
  await b.evaluate((bId) => window.conn.send({ from: bId, text: "hello from B" }), bId);
  const gotB = await until(b, (s) => s.received.length >= 1, "A's message", pages);
  const gotA = await until(a, (s) => s.received.length >= 1, "B's message", pages);
  assert.deepEqual(gotB.received, [{ from: aId, text: "hello from A", n: [1, 2, 3] }]);
  assert.deepEqual(gotA.received, [{ from: bId, text: "hello from B" }]);
  console.log(`PeerJS ids A ${aId}, B ${bId}; B got ${JSON.stringify(gotB.received)}, A got ${JSON.stringify(gotA.received)}`);

  // --- a third client claiming A's id (another token) is refused -------------
  const claimant = await peerPage("C (A's id)", aId);
  const refused = await eventually(async () => {
    const s = await state(claimant);
    return s.errors.length > 0 && s;
  }, 30_000, "an error for the Peer that claims A's id", () => describe([...pages, claimant]));
  assert.match(refused.errors[0], /^unavailable-id: /, `the claim of a connected id: ${refused.errors}`);
  assert.equal(refused.id, null, "the claiming Peer never opened");
  const stillA = await state(a);
  assert.ok(stillA.open && !stillA.disconnected, "A stays connected to the server");

  // --- /api while both are connected ----------------------------------------
  const api = { skip: EXTERNAL && `PEERJS_SERVER=${EXTERNAL} is not Chatsubo: no /api` };
  const live = {};
  await t.test("both sessions are in /api/sessions?protocol=peerjs while connected", api, async () => {
    await eventually(async () => {
      const all = await sessions();
      for (const id of ids) live[id] = all.find((s) => s.peerId === id && s.endedAt === null);
      return ids.every((id) => live[id]);
    }, 20_000, `open sessions for ${ids} in /api/sessions?protocol=peerjs`);
    for (const id of ids) {
      assert.equal(live[id].protocol, "peerjs");
      assert.equal(live[id].durationMs, null, "no duration while connected");
    }
  });

  // --- destroy both: the sessions end, with durations ------------------------
  const destroyAt = Date.now();
  await Promise.all(pages.map((page) => page.evaluate(() => window.peer.destroy())));
  await t.test("after peer.destroy() both sessions have ended, with durations", api, async () => {
    assert.ok(ids.every((id) => live[id]), "the open sessions were found first");
    const ended = await eventually(async () => {
      const all = await sessions();
      const found = ids.map((id) => all.find((s) => s.sessionId === live[id].sessionId));
      return found.every((s) => s?.endedAt) && found;
    }, 20_000, "both sessions ended in /api/sessions?protocol=peerjs");
    for (const [i, s] of ended.entries()) {
      assert.equal(s.peerId, ids[i]);
      assert.equal(s.protocol, "peerjs");
      assert.equal(typeof s.durationMs, "number", `durationMs of ${JSON.stringify(s)}`);
      // Connected before its `open` (openAt), ended after destroy() (destroyAt).
      assert.ok(s.durationMs >= destroyAt - openAt - 5, `${s.durationMs} ms covers the ${destroyAt - openAt} ms it was open`);
    }
  });
});
