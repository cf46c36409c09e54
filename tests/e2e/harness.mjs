// The browser tests' harness: the real chatsubo binary (its port read back
// from its JSON log line `event: listening`), Debian's Chromium, polling.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { connect, createServer } from "node:net";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const BINARY =
  process.env.CHATSUBO_BIN ?? fileURLToPath(new URL("../../target/debug/chatsubo", import.meta.url));

// The flags that make WebRTC work between headless pages on any machine
// (docs/client.md): loopback candidates and the media permission; the rest
// keep Chromium off the network.
const CHROMIUM_ARGS = [
  "--allow-loopback-in-peer-connection",
  "--use-fake-ui-for-media-stream",
  "--use-fake-device-for-media-stream",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** Debian's headless Chromium, set up for WebRTC between pages. */
export function launchChromium({ extraArgs = [] } = {}) {
  const args = [...CHROMIUM_ARGS, ...extraArgs];
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    // Chromium's sandbox refuses to start as root.
    args: process.getuid?.() === 0 ? [...args, "--no-sandbox"] : args,
  });
}

/** A free TCP port on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/**
 * A real nginx with the shipped deploy/nginx/chatsubo.conf in front of the
 * server on `upstream`, terminating TLS on 127.0.0.1 (tests/nginx/in-front.sh).
 * Resolves to { base: "https://127.0.0.1:PORT", stop() } once it listens.
 */
export async function startNginx({ dir, upstream }) {
  const [tls, http] = [await freePort(), await freePort()];
  const nginx = await runScript("../nginx/in-front.sh", [dir, upstream, tls, http], tls, "nginx");
  return { base: `https://127.0.0.1:${tls}`, stop: nginx.stop };
}

/**
 * A real coturn on 127.0.0.1 (tests/coturn/run.sh, as tests/api/turn.rs
 * starts it) with a fresh shared secret in `dir/turn-secret`, the file to
 * give chatsubo's --turn-secret-file. Resolves to { url, secretFile, stop() }
 * once it listens.
 */
export async function startCoturn({ dir }) {
  mkdirSync(dir, { recursive: true });
  const secretFile = join(dir, "turn-secret");
  writeFileSync(secretFile, `${randomBytes(18).toString("base64url")}\n`, { mode: 0o600 });
  const port = await freePort();
  // 100 relay ports below the kernel's ephemeral range, by the listening port.
  const min = 20_000 + (port % 100) * 100;
  const coturn = await runScript("../coturn/run.sh", [join(dir, "run"), port, secretFile, min, min + 99], port, "coturn");
  return { url: `turn:127.0.0.1:${port}?transport=udp`, secretFile, stop: coturn.stop };
}

/**
 * Runs one of the tests' shell scripts (`path` from this directory) until
 * stopped; resolves to { stop() } once something accepts on `port`.
 */
async function runScript(path, args, port, what) {
  const script = fileURLToPath(new URL(path, import.meta.url));
  const proc = spawn("bash", [script, ...args.map(String)], { stdio: ["ignore", "ignore", "inherit"] });
  const exited = new Promise((resolve) => proc.once("exit", (code, signal) => resolve({ code, signal })));
  await eventually(
    () =>
      new Promise((resolve) => {
        if (proc.exitCode !== null) return resolve(false);
        const socket = connect(port, "127.0.0.1", () => {
          socket.destroy();
          resolve(true);
        });
        socket.once("error", () => resolve(false));
      }),
    20_000,
    `${what} listening (is it installed? scripts/test.sh installs it)`,
  );
  return {
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGKILL");
      return exited;
    },
  };
}

/** A scratch directory for one test run; removed by the caller. */
export function scratch() {
  const dir = mkdtempSync(join(tmpdir(), "chatsubo-e2e-"));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * Starts chatsubo on 127.0.0.1:`port` (0: any) with `dir` for data and logs.
 * Resolves to { proc, port, base, stop(signal) } once it is listening.
 */
export function startServer({ dir, port = 0, args = [] }) {
  const proc = spawn(
    BINARY,
    [
      "--listen", `127.0.0.1:${port}`,
      "--data-dir", join(dir, "data"),
      "--log-dir", join(dir, "logs"),
      ...args,
    ],
    { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, RUST_LOG: "info" } },
  );
  const exited = new Promise((resolve) => proc.once("exit", (code, signal) => resolve({ code, signal })));
  let stderr = "";
  proc.stderr.on("data", (chunk) => (stderr += chunk));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`chatsubo did not start: ${stderr}`)), 20_000);
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`chatsubo exited (${code ?? signal}) before listening: ${stderr}`));
    });
    // Keep reading stdout for the whole run, or the pipe would fill up.
    createInterface({ input: proc.stdout }).on("line", (line) => {
      if (!line.includes('"listening"')) return;
      const match = line.match(/"address":"[^"]*:(\d+)"/);
      if (!match) return;
      clearTimeout(timer);
      const bound = Number(match[1]);
      resolve({
        proc,
        port: bound,
        base: `http://127.0.0.1:${bound}`,
        exited,
        async stop(signal = "SIGTERM") {
          if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
          return exited;
        },
      });
    });
  });
}

/** Polls `probe` until it returns a truthy value, or fails after `ms`. */
export async function eventually(probe, ms = 30_000, what = "condition", explain = async () => "") {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await probe();
      if (last) return last;
    } catch (error) {
      last = error;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  const context = await explain().catch((error) => String(error));
  throw new Error(`timed out waiting for ${what}; last: ${last?.message ?? JSON.stringify(last)} ${context}`);
}

/**
 * The sum of every sample of `family` whose labels include all of
 * `labels` (`{outcome: "connected"}`), 0 when there is none.
 */
export function total(text, family, labels = {}) {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith("#") || !line.startsWith(family)) continue;
    const at = line.lastIndexOf(" ");
    const series = line.slice(0, at);
    if (series !== family && !series.startsWith(`${family}{`)) continue;
    const matches = Object.entries(labels).every(([k, v]) => series.includes(`${k}="${v}"`));
    if (matches) sum += Number(line.slice(at + 1));
  }
  return sum;
}

/**
 * One sample of a Prometheus text exposition: `name{labels}` sums every
 * series of `name` that has those labels (and perhaps others, such as the
 * `protocol` most families carry); 0 when there is none.
 */
export function sample(text, name) {
  const brace = name.indexOf("{");
  const family = brace < 0 ? name : name.slice(0, brace);
  const labels = {};
  if (brace >= 0) {
    for (const pair of name.slice(brace + 1, -1).split(",").filter(Boolean)) {
      const [k, v] = pair.split("=");
      labels[k] = JSON.parse(v);
    }
  }
  return total(text, family, labels);
}
