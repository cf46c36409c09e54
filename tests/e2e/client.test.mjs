// Unit tests of the browser client's pure parts, in Node.
import assert from "node:assert/strict";
import { test } from "node:test";

import { backoffDelay, defaultUrl } from "../../web/chatsubo-client.js";

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
