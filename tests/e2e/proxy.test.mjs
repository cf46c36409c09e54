// Three pages of headless Chromium load the demo and build their mesh
// through a real nginx with the shipped deploy/nginx/chatsubo.conf, over
// https:// and wss:// (the server trusts the proxy: --trusted-proxy
// 127.0.0.1/32).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { eventually, launchChromium, scratch, startNginx, startServer, total } from "./harness.mjs";

const PAGES = 3;
const ROOM = "e2e-proxy";

let tmp;
let server;
let nginx;
let browser;

before(async () => {
  tmp = scratch();
  server = await startServer({ dir: tmp.dir, args: ["--trusted-proxy", "127.0.0.1/32"] });
  nginx = await startNginx({ dir: `${tmp.dir}/nginx`, upstream: server.port });
  // The test's certificate is signed by a CA made for this run only.
  browser = await launchChromium({ extraArgs: ["--ignore-certificate-errors"] });
});

after(async () => {
  await browser?.close();
  await nginx?.stop();
  await server?.stop("SIGKILL");
  tmp?.remove();
});

test("three pages build a full mesh through nginx over wss://", { timeout: 120_000 }, async () => {
  const pages = [];
  for (let i = 0; i < PAGES; i++) {
    const context = await browser.newContext({ permissions: ["camera", "microphone"], ignoreHTTPSErrors: true });
    const page = await context.newPage();
    page.on("pageerror", (error) => console.error(`page${i}:`, error));
    await page.goto(`${nginx.base}/?room=${ROOM}&name=page${i}`);
    pages.push(page);
  }
  for (const page of pages) {
    assert.equal(await page.evaluate(() => window.chatsubo.client.url), `wss://${new URL(nginx.base).host}/ws`);
    await eventually(
      () => page.evaluate(() => window.chatsubo.mesh.peers().filter((p) => p.channelOpen).length === 2),
      60_000,
      "a full mesh through the proxy",
      async () => JSON.stringify(await Promise.all(pages.map((p) => p.evaluate(() => window.chatsubo.mesh.peers())))),
    );
  }
  // Straight to the server on loopback: the three sessions are stored.
  // (Which address they record is tests/api/edge/nginx.rs's business: here
  // every page and the proxy are on 127.0.0.1.)
  await eventually(async () => {
    const res = await fetch(`${server.base}/api/sessions?room=${ROOM}`);
    const { sessions } = await res.json();
    return sessions.length === PAGES;
  }, 20_000, "three sessions stored");
  const metrics = await (await fetch(`${server.base}/metrics`)).text();
  assert.equal(total(metrics, "chatsubo_active_connections"), 3, "three connections open");
});
