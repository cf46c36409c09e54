// Unit tests of the browser client's pure parts, in Node.
import assert from "node:assert/strict";
import { test } from "node:test";

import { SignalingClient, backoffDelay, credentialExpiry, defaultUrl, selectedPath } from "../../web/chatsubo-client.js";

test("backoff is full jitter: between 0 and min(cap, base * 2^attempt)", () => {
  assert.equal(backoffDelay(0, 500, 15000, () => 0), 0);
  assert.equal(backoffDelay(0, 500, 15000, () => 0.999999), 499);
  assert.equal(backoffDelay(3, 500, 15000, () => 0.5), 2000);
  assert.equal(backoffDelay(10, 500, 15000, () => 0.999999), 14999, "capped");
  assert.equal(backoffDelay(1000, 500, 15000, () => 0.5), 7500, "no overflow for huge attempts");
  for (let attempt = 0; attempt < 20; attempt++) {
    const d = backoffDelay(attempt, 500, 15000);
    assert.ok(d >= 0 && d < Math.min(15000, 500 * 2 ** attempt));
  }
});

test("retries of many clients spread out instead of arriving together", () => {
  const delays = Array.from({ length: 1000 }, () => backoffDelay(5, 500, 15000));
  const buckets = new Set(delays.map((d) => Math.floor(d / 1000)));
  assert.ok(buckets.size >= 14, `1000 clients spread over ${buckets.size} one-second buckets`);
});

test("the default URL follows the page's scheme and host", () => {
  assert.equal(defaultUrl({ protocol: "http:", host: "example.test:8080" }), "ws://example.test:8080/ws");
  assert.equal(defaultUrl({ protocol: "https:", host: "example.test" }), "wss://example.test/ws");
});

test("the credentials' expiry is the earliest <unix seconds>: prefix of a username", () => {
  const servers = [
    { urls: ["stun:stun.example.org:3478"] },
    { urls: ["turn:a.example.org:3478"], username: "1765090800:p_7Hk2", credential: "x" },
    { urls: ["turn:b.example.org:3478"], username: "1765090700:p_7Hk2", credential: "y" },
  ];
  assert.equal(credentialExpiry(servers), 1765090700_000);
  assert.equal(credentialExpiry([{ urls: ["stun:s"] }]), null, "STUN only: nothing expires");
  assert.equal(credentialExpiry([{ urls: ["turn:t"], username: "ann", credential: "z" }]), null, "a static username");
  assert.equal(credentialExpiry(null), null);
  assert.equal(credentialExpiry([]), null);
});

test("the path is the local candidate type of the selected pair", () => {
  const report = (entries) => new Map(entries.map((s) => [s.id, s]));
  const candidates = [
    { id: "L1", type: "local-candidate", candidateType: "host" },
    { id: "L2", type: "local-candidate", candidateType: "relay" },
    { id: "R1", type: "remote-candidate", candidateType: "srflx" },
  ];
  // Chromium: the transport names the selected pair.
  const chromium = report([
    ...candidates,
    { id: "P1", type: "candidate-pair", localCandidateId: "L1", remoteCandidateId: "R1", state: "succeeded", nominated: true },
    { id: "P2", type: "candidate-pair", localCandidateId: "L2", remoteCandidateId: "R1", state: "succeeded", nominated: true },
    { id: "T", type: "transport", selectedCandidatePairId: "P2" },
  ]);
  assert.equal(selectedPath(chromium), "relay");
  // Firefox: the pair says it is selected.
  const firefox = report([
    ...candidates,
    { id: "P1", type: "candidate-pair", localCandidateId: "L1", state: "in-progress" },
    { id: "P2", type: "candidate-pair", localCandidateId: "L1", state: "succeeded", selected: true },
  ]);
  assert.equal(selectedPath(firefox), "host");
  // Nothing selected yet, or a type the protocol does not know: no path.
  const waiting = report([...candidates, { id: "P", type: "candidate-pair", localCandidateId: "L1", state: "waiting" }]);
  assert.equal(selectedPath(waiting), undefined);
  const unknownType = report([
    { id: "L", type: "local-candidate", candidateType: "turn" },
    { id: "P", type: "candidate-pair", localCandidateId: "L", state: "succeeded" },
    { id: "T", type: "transport", selectedCandidatePairId: "P" },
  ]);
  assert.equal(selectedPath(unknownType), undefined);
});

/** A WebSocket that records what the client sends; the test plays the server. */
class FakeSocket {
  static OPEN = 1;
  static last = null;
  constructor(url) {
    this.url = url;
    this.readyState = FakeSocket.OPEN;
    this.sent = [];
    FakeSocket.last = this;
  }
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close() {}
  receive(message) {
    this.onmessage({ data: JSON.stringify(message) });
  }
}

test("TURN credentials are refreshed at 80% of their lifetime, and on demand once", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout", "setInterval", "Date"], now: 1_765_090_000_000 });
  globalThis.WebSocket = FakeSocket;
  t.after(() => delete globalThis.WebSocket);
  const turn = (expiry) => [{ urls: ["turn:t:3478"], username: `${expiry}:p_1`, credential: "c" }];
  const client = new SignalingClient("ws://test/ws", { pingIntervalMs: 0, telemetry: false }).connect();
  const socket = FakeSocket.last;
  const asked = () => socket.sent.filter((m) => m.type === "ice-servers").length;
  socket.receive({ type: "welcome", peerId: "p_1", sessionId: "s", resumeToken: "r", iceServers: turn(1_765_090_100) });
  assert.deepEqual(client.iceServers, turn(1_765_090_100));

  t.mock.timers.tick(79_000);
  assert.equal(asked(), 0);
  assert.equal(client.iceServersExpiring(), false);
  t.mock.timers.tick(1_000);
  assert.equal(asked(), 1, "asked at 80% of the 100 s");
  assert.equal(client.iceServersExpiring(), true);

  // Calls while one is in flight share it; the answer replaces the servers.
  const [a, b] = [client.refreshIceServers(), client.refreshIceServers()];
  assert.equal(asked(), 1);
  socket.receive({ type: "ice-servers", iceServers: turn(1_765_090_180) });
  assert.deepEqual(await a, turn(1_765_090_180));
  assert.equal(await b, await a);
  assert.equal(client.iceServersExpiring(), false);

  // No answer: resolved after 3 s with what it has.
  const late = client.refreshIceServers();
  assert.equal(asked(), 2);
  t.mock.timers.tick(3_000);
  assert.deepEqual(await late, turn(1_765_090_180));

  // A server without ICE servers: nothing expires, nothing is asked.
  socket.receive({ type: "ice-servers", iceServers: [] });
  t.mock.timers.tick(1_000_000);
  assert.equal(asked(), 2);
  assert.equal(client.iceServersExpiring(), false);
  client.close();
});
