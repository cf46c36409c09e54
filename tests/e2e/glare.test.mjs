// Two connected pages start camera and microphone at the same instant, so
// both renegotiate at once: the offers collide and perfect negotiation must
// resolve the collision (the polite peer rolls back) with no failure.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { eventually, launchChromium, sample, scratch, startServer, total } from "./harness.mjs";


let tmp;
let server;
let browser;

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

test("simultaneous renegotiation on both sides ends with media both ways", { timeout: 120_000 }, async () => {
  const pages = [];
  for (const name of ["ann", "bob"]) {
    const context = await browser.newContext({ permissions: ["camera", "microphone"] });
    const page = await context.newPage();
    await page.goto(`${server.base}/?room=glare&name=${name}`);
    pages.push(page);
  }
  for (const page of pages) {
    await page.waitForFunction(() => window.chatsubo.mesh.peers().some((p) => p.channelOpen), null, {
      timeout: 60_000,
    });
  }
  const before = await (await fetch(`${server.base}/metrics`)).text();
  const offersBefore = sample(before, 'chatsubo_messages_total{direction="in",type="offer"}');
  const answersBefore = sample(before, 'chatsubo_messages_total{direction="in",type="answer"}');

  // Both click at once: each side's negotiationneeded fires and both offer.
  await Promise.all(pages.map((page) => page.click("#media")));

  for (const page of pages) {
    await page.waitForFunction(
      () => {
        const videos = [...document.querySelectorAll("video[data-peer]")].filter((v) => v.dataset.peer !== "me");
        return videos.some((v) => v.srcObject && v.srcObject.getVideoTracks().length > 0);
      },
      null,
      { timeout: 60_000 },
    );
    const open = await page.evaluate(() => window.chatsubo.mesh.peers().every((p) => p.channelOpen && p.state === "connected"));
    assert.ok(open, "the link stayed connected through the renegotiation");
  }

  const text = await eventually(async () => {
    const t = await (await fetch(`${server.base}/metrics`)).text();
    return sample(t, 'chatsubo_messages_total{direction="in",type="offer"}') >= offersBefore + 1 && t;
  }, 10_000, "the renegotiation offers");
  const offers = sample(text, 'chatsubo_messages_total{direction="in",type="offer"}') - offersBefore;
  const answers = sample(text, 'chatsubo_messages_total{direction="in",type="answer"}') - answersBefore;
  // Offers that got no answer were ignored by the impolite peer: a collision.
  console.log(`renegotiation: ${offers} offers, ${answers} answers`);
  assert.equal(sample(text, 'chatsubo_client_errors_total{code="NEGOTIATION_FAILED"}'), 0, "no negotiation failed");
  assert.equal(total(text, "chatsubo_peer_connections_total", { outcome: "failed" }), 0);
});
