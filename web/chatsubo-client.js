// Chatsubo browser client: a signaling client that reconnects and resumes,
// a WebRTC mesh coordinator (perfect negotiation), and client telemetry.
// Plain ES module, no build step: import { SignalingClient, Mesh } from
// "/chatsubo-client.js". Guide: docs/client.md.

const DEFAULTS = {
  backoffBaseMs: 500, // first retry waits up to this long
  backoffCapMs: 15000, // never more than this
  connectTimeoutMs: 10000, // a socket that has not said welcome by then is retried
  pingIntervalMs: 10000, // signaling RTT sample interval (0: off)
  telemetry: true, // report what only the browser sees
  maxQueuedTelemetry: 50, // kept while disconnected; oldest dropped
};

/**
 * TURN credentials are refreshed (`ice-servers`) once this share of their
 * remaining lifetime has passed; past that point they count as expiring,
 * and a new peer connection asks for fresh ones before it gathers.
 */
const ICE_REFRESH_AT = 0.8;
const ICE_REFRESH_MIN_MS = 5000; // the refresh timer never fires sooner than this
const ICE_REFRESH_MAX_MS = 2 ** 31 - 1; // setTimeout's limit (about 24.8 days)
const ICE_ANSWER_TIMEOUT_MS = 3000; // an ice-servers answer later than this is not waited for

/** The local candidate types a connected pair can report as its `path`. */
const PATHS = new Set(["host", "srflx", "prflx", "relay"]);

/** Close codes after which reconnecting would be wrong. */
const FINAL_CLOSE_CODES = new Set([
  4000, // this peer resumed on another connection
  1008, // kicked for abuse: retrying would only repeat it
]);

/**
 * Full-jitter exponential backoff: a random delay in [0, min(cap, base*2^n)].
 * Spreading retries this way keeps a restarting server from being flooded
 * by every client at once.
 */
export function backoffDelay(attempt, baseMs, capMs, random = Math.random) {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}

/**
 * When the TURN credentials among `iceServers` expire, in ms since the
 * epoch: the earliest `<expiry unix seconds>:` prefix of a `username`
 * (coturn's REST API scheme), or null when no server has one.
 */
export function credentialExpiry(iceServers) {
  let earliest = null;
  for (const server of iceServers ?? []) {
    const match = /^(\d+):/.exec(typeof server?.username === "string" ? server.username : "");
    if (!match) continue;
    const at = Number(match[1]) * 1000;
    if (earliest === null || at < earliest) earliest = at;
  }
  return earliest;
}

/**
 * The path of a connected peer connection from its `getStats()` report:
 * the local candidate type (`host`, `srflx`, `prflx`, `relay`) of the
 * selected candidate pair, or undefined when the report does not say.
 */
export function selectedPath(report) {
  let pair;
  for (const stats of report.values()) {
    if (stats.type === "transport" && stats.selectedCandidatePairId) {
      pair = report.get(stats.selectedCandidatePairId);
      if (pair) break;
    }
  }
  if (!pair) {
    // Browsers without the transport's selectedCandidatePairId (Firefox)
    // flag the pair itself.
    for (const stats of report.values()) {
      if (stats.type === "candidate-pair" && stats.state === "succeeded" && (stats.selected || stats.nominated)) {
        pair = stats;
        break;
      }
    }
  }
  const type = pair && report.get(pair.localCandidateId)?.candidateType;
  return PATHS.has(type) ? type : undefined;
}

/**
 * The signaling connection. Events (all CustomEvent, payload in `detail`):
 * `state` ({state: "connecting"|"open"|"reconnecting"|"closed"}), `welcome`,
 * `joined`, `peer-joined`, `peer-left`, `offer`, `answer`, `ice-candidate`,
 * `ice-servers` ({iceServers}: from a welcome or a refresh),
 * `server-error` (an `error` message), `rtt` ({ms}).
 */
export class SignalingClient extends EventTarget {
  constructor(url, options = {}) {
    super();
    this.url = url ?? defaultUrl();
    this.options = { ...DEFAULTS, ...options };
    this.state = "idle";
    this.peerId = null;
    this.sessionId = null;
    this.room = null; // the room we are in, or want to be in
    this.displayName = null;
    this.joined = false;
    this.socket = null;
    this.resumeToken = null; // from the latest welcome
    this.attempt = 0; // consecutive failed attempts
    this.downSince = null; // when the connection was lost
    this.everConnected = false;
    this.stopped = false;
    this.pending = []; // telemetry waiting for a connection
    this.pings = new Map();
    this.nextPingId = 1;
    this.timers = { retry: null, connect: null, ping: null, ice: null };
    this.lastRttMs = null;
    this.iceServers = null; // STUN/TURN servers from the server, null when it names none
    this.iceExpiringAt = null; // from then on the TURN credentials count as expiring
    this.iceRequest = null; // the ice-servers request in flight
  }

  /** Opens the connection (and keeps it open until close()). */
  connect() {
    this.stopped = false;
    this.#open();
    return this;
  }

  /** Joins a room; remembered across reconnects. */
  join(room, displayName) {
    this.room = room;
    this.displayName = displayName ?? this.displayName;
    if (this.state === "open") this.#sendJoin(null);
  }

  /** Leaves the room but stays connected. */
  leave() {
    this.room = null;
    this.joined = false;
    this.#send({ type: "leave" });
  }

  /** Sends an offer, answer or ice-candidate to a peer of the room. */
  signal(type, to, data, traceparent) {
    const message = { type, to, data };
    if (traceparent) message.traceparent = traceparent;
    return this.#send(message);
  }

  /**
   * Whether the TURN credentials in `iceServers` are close to their expiry
   * (past 80% of the lifetime they had when they arrived).
   */
  iceServersExpiring() {
    return this.iceExpiringAt !== null && Date.now() >= this.iceExpiringAt;
  }

  /**
   * Asks the server for fresh TURN credentials (`ice-servers`). Resolves to
   * `iceServers` once the answer is in, or as they are when the socket is
   * not open, the server refuses, or no answer comes within 3 s. Calls made
   * while a request is in flight share it.
   */
  refreshIceServers() {
    if (this.iceRequest) return this.iceRequest;
    if (!this.#send({ type: "ice-servers" })) return Promise.resolve(this.iceServers);
    this.iceRequest = new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.removeEventListener("ice-servers", done);
        this.removeEventListener("server-error", refused);
        this.iceRequest = null;
        resolve(this.iceServers);
      };
      const refused = (event) => {
        if (event.detail?.ref === "ice-servers") done();
      };
      const timer = setTimeout(done, ICE_ANSWER_TIMEOUT_MS);
      this.addEventListener("ice-servers", done);
      this.addEventListener("server-error", refused);
    });
    return this.iceRequest;
  }

  /** Reports a telemetry event (queued while disconnected). */
  report(event, fields = {}) {
    if (!this.options.telemetry) return;
    const message = { type: "telemetry", event, ...fields };
    if (this.state === "open" && this.#send(message)) return;
    this.pending.push(message);
    if (this.pending.length > this.options.maxQueuedTelemetry) this.pending.shift();
  }

  /** Reports an error that would otherwise be lost in the console. */
  reportError(code, error) {
    const message = String(error?.message ?? error ?? "").slice(0, 500);
    console.warn(`chatsubo: ${code}: ${message}`);
    this.report("client-error", { code, message });
  }

  /** Closes for good: no reconnect. */
  close() {
    this.stopped = true;
    this.#clearTimers();
    if (this.socket) this.socket.close(1000, "bye");
    this.#setState("closed");
  }

  #open() {
    this.#clearTimers();
    this.#setState(this.everConnected ? "reconnecting" : "connecting");
    const startedAt = performance.now();
    let socket;
    try {
      socket = new WebSocket(this.url);
    } catch (error) {
      this.#scheduleRetry();
      return;
    }
    this.socket = socket;
    let welcomed = false;
    this.timers.connect = setTimeout(() => {
      if (!welcomed) socket.close(4001, "connect timeout");
    }, this.options.connectTimeoutMs);

    socket.onmessage = (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message.type === "welcome") {
        welcomed = true;
        clearTimeout(this.timers.connect);
        this.#onWelcome(message, performance.now() - startedAt);
        return;
      }
      this.#onMessage(message);
    };
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      clearInterval(this.timers.ping);
      clearTimeout(this.timers.connect);
      const wasOpen = this.state === "open";
      this.joined = false;
      if (wasOpen) this.downSince = Date.now();
      if (!wasOpen && this.everConnected) {
        this.report("reconnect", { attempt: this.attempt + 1, outcome: "failure" });
      }
      if (this.stopped || FINAL_CLOSE_CODES.has(event.code)) {
        this.#setState("closed");
        return;
      }
      this.#scheduleRetry();
    };
  }

  #scheduleRetry() {
    const delay = backoffDelay(this.attempt, this.options.backoffBaseMs, this.options.backoffCapMs);
    this.attempt += 1;
    this.#setState(this.everConnected ? "reconnecting" : "connecting");
    this.timers.retry = setTimeout(() => this.#open(), delay);
  }

  #onWelcome(welcome, connectMs) {
    const previousToken = this.resumeToken;
    const reconnecting = this.everConnected;
    const attempts = this.attempt + 1;
    this.peerId = welcome.peerId;
    this.sessionId = welcome.sessionId;
    this.resumeToken = welcome.resumeToken;
    this.heartbeatIntervalMs = welcome.heartbeatIntervalMs;
    this.maxRoomSize = welcome.maxRoomSize;
    this.#setIceServers(Array.isArray(welcome.iceServers) ? welcome.iceServers : null);
    this.#setState("open");
    this.dispatchEvent(new CustomEvent("welcome", { detail: welcome }));
    this.report("connect-time", { ms: round(connectMs) });
    if (reconnecting) {
      const downtimeMs = this.downSince ? Date.now() - this.downSince : 0;
      this.report("reconnect", { attempt: attempts, outcome: "success", downtimeMs });
    }
    this.attempt = 0;
    this.downSince = null;
    this.everConnected = true;
    this.#flushTelemetry();
    if (this.room) this.#sendJoin(reconnecting ? previousToken : null);
    this.#startPings();
  }

  #sendJoin(resumeToken) {
    const join = { type: "join", room: this.room };
    if (this.displayName) join.displayName = this.displayName;
    if (resumeToken) join.resumeToken = resumeToken;
    this.#send(join);
  }

  #onMessage(message) {
    switch (message.type) {
      case "joined":
        this.joined = true;
        this.peerId = message.peerId;
        this.room = message.room;
        break;
      case "pong": {
        const sentAt = this.pings.get(message.id);
        if (sentAt !== undefined) {
          this.pings.delete(message.id);
          this.lastRttMs = round(performance.now() - sentAt);
          this.dispatchEvent(new CustomEvent("rtt", { detail: { ms: this.lastRttMs } }));
          this.report("signaling-rtt", { ms: this.lastRttMs });
        }
        return;
      }
      case "error":
        this.dispatchEvent(new CustomEvent("server-error", { detail: message }));
        return;
      case "ice-servers":
        this.#setIceServers(Array.isArray(message.iceServers) ? message.iceServers : []);
        return;
      default:
        break;
    }
    this.dispatchEvent(new CustomEvent(message.type, { detail: message }));
  }

  /**
   * Takes the servers of a welcome or an ice-servers answer, and schedules
   * the next refresh at 80% of the credentials' remaining lifetime (by
   * this browser's clock).
   */
  #setIceServers(servers) {
    this.iceServers = servers;
    clearTimeout(this.timers.ice);
    const expiry = credentialExpiry(servers);
    const now = Date.now();
    this.iceExpiringAt = expiry === null ? null : now + ICE_REFRESH_AT * (expiry - now);
    if (this.iceExpiringAt !== null) {
      const delay = Math.min(ICE_REFRESH_MAX_MS, Math.max(ICE_REFRESH_MIN_MS, this.iceExpiringAt - now));
      this.timers.ice = setTimeout(() => this.refreshIceServers(), delay);
    }
    this.dispatchEvent(new CustomEvent("ice-servers", { detail: { iceServers: servers } }));
  }

  #startPings() {
    clearInterval(this.timers.ping);
    if (!this.options.pingIntervalMs) return;
    const ping = () => {
      const id = this.nextPingId++;
      this.pings.set(id, performance.now());
      if (this.pings.size > 10) this.pings.delete(this.pings.keys().next().value);
      this.#send({ type: "ping", id });
    };
    ping();
    this.timers.ping = setInterval(ping, this.options.pingIntervalMs);
  }

  #flushTelemetry() {
    const queued = this.pending.splice(0);
    for (const message of queued) this.#send(message);
  }

  #send(message) {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return false;
    this.socket.send(JSON.stringify(message));
    return true;
  }

  #setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state } }));
  }

  #clearTimers() {
    clearTimeout(this.timers.retry);
    clearTimeout(this.timers.connect);
    clearInterval(this.timers.ping);
    clearTimeout(this.timers.ice);
  }
}

/**
 * Reports uncaught errors and unhandled promise rejections to the server
 * instead of losing them in the console. Returns a function that stops it.
 */
export function reportUncaughtErrors(client, target = globalThis) {
  const onError = (event) => client.reportError("UNCAUGHT_ERROR", event.error ?? event.message);
  const onRejection = (event) => client.reportError("UNHANDLED_REJECTION", event.reason);
  target.addEventListener("error", onError);
  target.addEventListener("unhandledrejection", onRejection);
  return () => {
    target.removeEventListener("error", onError);
    target.removeEventListener("unhandledrejection", onRejection);
  };
}

/**
 * One RTCPeerConnection per room mate, negotiated with the "perfect
 * negotiation" pattern, so that both sides may start at once without glare.
 * Its ICE servers are the signaling server's (`welcome`, refreshed before
 * they expire), unless `rtcConfig` names its own `iceServers`.
 * Events: `peer` ({peerId, state, path}), `message` ({from, text}), `track`
 * ({peerId, streams}), `peer-removed` ({peerId}).
 */
export class Mesh extends EventTarget {
  constructor(client, options = {}) {
    super();
    this.client = client;
    this.options = {
      rtcConfig: {}, // without iceServers: the server's
      connectTimeoutMs: 15000, // a link not connected by then is reported failed
      channel: "chat",
      ...options,
    };
    this.links = new Map();
    this.localStream = null;
    this.displayNames = new Map();
    client.addEventListener("joined", (e) => this.#onJoined(e.detail));
    // The newcomer offers to everyone already there; the others answer. That
    // avoids glare on every join; perfect negotiation handles the rest (both
    // sides adding a camera at once, ICE restarts).
    client.addEventListener("peer-joined", (e) => {
      this.displayNames.set(e.detail.peerId, e.detail.displayName);
    });
    client.addEventListener("peer-left", (e) => this.#drop(e.detail.peerId));
    for (const type of ["offer", "answer", "ice-candidate"]) {
      client.addEventListener(type, (e) => this.#onSignal(type, e.detail));
    }
  }

  /** Peers and the state of the link to each. */
  peers() {
    return [...this.links.values()].map((link) => ({
      peerId: link.peerId,
      displayName: this.displayNames.get(link.peerId) ?? null,
      state: link.pc.connectionState,
      channelOpen: link.channel?.readyState === "open",
      path: link.path,
    }));
  }

  /** Sends text to every peer whose data channel is open; returns how many. */
  broadcast(text) {
    let sent = 0;
    for (const link of this.links.values()) {
      if (link.channel?.readyState === "open") {
        link.channel.send(text);
        sent += 1;
      }
    }
    return sent;
  }

  /** Adds (or with null, removes) a local camera/microphone stream. */
  setLocalStream(stream) {
    this.localStream = stream;
    for (const link of this.links.values()) this.#syncTracks(link);
  }

  close() {
    for (const peerId of [...this.links.keys()]) this.#drop(peerId);
  }

  #onJoined(joined) {
    if (!joined.resumed) {
      // A fresh join means a new peer id: every link must be rebuilt.
      this.close();
    }
    for (const peer of joined.peers) {
      this.displayNames.set(peer.peerId, peer.displayName);
      this.#link(peer.peerId);
    }
  }

  /** The configuration of a new peer connection, with the servers to use now. */
  #rtcConfig() {
    const own = this.options.rtcConfig ?? {};
    if (!this.#serverIce()) return own;
    return { ...own, iceServers: this.client.iceServers ?? [] };
  }

  /** Whether links use the signaling server's ICE servers (the app named none). */
  #serverIce() {
    return this.options.rtcConfig?.iceServers === undefined;
  }

  /** Fresh credentials from the server into the link's configuration. */
  async #refreshIce(link) {
    await this.client.refreshIceServers();
    if (link.pc.signalingState === "closed") return;
    try {
      link.pc.setConfiguration(this.#rtcConfig());
    } catch (error) {
      this.client.reportError("ICE_FAILED", error);
    }
  }

  /** An ICE restart, with fresh TURN credentials when the server hands them out. */
  async #restartIce(link) {
    if (this.#serverIce() && this.client.iceServers?.length) await this.#refreshIce(link);
    if (link.pc.signalingState !== "closed") link.pc.restartIce();
  }

  #link(peerId) {
    if (this.links.has(peerId)) return this.links.get(peerId);
    const pc = new RTCPeerConnection(this.#rtcConfig());
    const link = {
      peerId,
      pc,
      // The peer with the larger id yields on a collision.
      polite: this.client.peerId > peerId,
      makingOffer: false,
      ignoreOffer: false,
      settingRemoteAnswer: false,
      queue: Promise.resolve(),
      early: [],
      startedAt: performance.now(),
      reported: false,
      channel: null,
      senders: new Map(),
      timer: null,
      path: null, // the selected pair's local candidate type, once connected
      ready: null, // while fresh TURN credentials are on their way: nothing gathers before
    };
    this.links.set(peerId, link);
    if (this.#serverIce() && this.client.iceServersExpiring()) {
      link.ready = this.#refreshIce(link).finally(() => (link.ready = null));
      link.queue = link.ready;
    }

    // A pre-negotiated channel: both sides open it, no ondatachannel race.
    link.channel = pc.createDataChannel(this.options.channel, { negotiated: true, id: 0 });
    link.channel.onmessage = (e) =>
      this.dispatchEvent(new CustomEvent("message", { detail: { from: peerId, text: String(e.data) } }));
    link.channel.onopen = () => this.#changed(link);
    link.channel.onclose = () => this.#changed(link);

    pc.onnegotiationneeded = async () => {
      try {
        if (link.ready) {
          await link.ready;
          // An offer from the peer came first; negotiationneeded fires
          // again once stable if it is still needed.
          if (pc.signalingState !== "stable") return;
        }
        link.makingOffer = true;
        await pc.setLocalDescription();
        this.client.signal("offer", peerId, pc.localDescription.toJSON());
      } catch (error) {
        this.client.reportError("NEGOTIATION_FAILED", error);
      } finally {
        link.makingOffer = false;
      }
    };
    pc.onicecandidate = ({ candidate }) => {
      if (candidate) this.client.signal("ice-candidate", peerId, candidate.toJSON());
    };
    pc.ontrack = ({ streams }) =>
      this.dispatchEvent(new CustomEvent("track", { detail: { peerId, streams } }));
    pc.onconnectionstatechange = () => {
      const state = pc.connectionState;
      if (state === "connected") this.#outcome(link, "connected");
      if (state === "failed") {
        this.#outcome(link, "failed", "ice-failed");
        this.#restartIce(link);
      }
      this.#changed(link);
    };
    // Without candidates a connection stays "new" for ever and never fails.
    link.timer = setTimeout(() => {
      if (pc.connectionState !== "connected") this.#outcome(link, "failed", "timeout");
    }, this.options.connectTimeoutMs);
    this.#syncTracks(link);
    this.#changed(link);
    return link;
  }

  #onSignal(type, message) {
    const link = this.#link(message.from);
    // One message at a time per link, in arrival order: a candidate must
    // never overtake the description it belongs to.
    link.queue = link.queue.then(() => this.#apply(link, type, message));
  }

  async #apply(link, type, message) {
    const { pc } = link;
    if (type === "ice-candidate") {
      if (!pc.remoteDescription) {
        // Candidates of an offer we ignored in a collision: the peer may reuse
        // them for its answer (Chrome does after a rollback), so keep them.
        link.early.push(message.data);
        if (link.early.length > 100) link.early.shift();
        return;
      }
      await addCandidate(pc, message.data);
      return;
    }
    try {
      const description = message.data;
      const readyForOffer =
        !link.makingOffer && (pc.signalingState === "stable" || link.settingRemoteAnswer);
      const collision = description.type === "offer" && !readyForOffer;
      link.ignoreOffer = !link.polite && collision;
      if (link.ignoreOffer) return;
      link.settingRemoteAnswer = description.type === "answer";
      await pc.setRemoteDescription(description);
      link.settingRemoteAnswer = false;
      for (const candidate of link.early.splice(0)) await addCandidate(pc, candidate);
      if (description.type === "offer") {
        await pc.setLocalDescription();
        // Echo the relay's trace context: offer and answer become one trace.
        this.client.signal("answer", link.peerId, pc.localDescription.toJSON(), message.traceparent);
      }
    } catch (error) {
      link.settingRemoteAnswer = false;
      this.client.reportError("NEGOTIATION_FAILED", error);
    }
  }

  #syncTracks(link) {
    const wanted = new Set(this.localStream ? this.localStream.getTracks() : []);
    for (const [track, sender] of link.senders) {
      if (!wanted.has(track)) {
        link.pc.removeTrack(sender);
        link.senders.delete(track);
      }
    }
    for (const track of wanted) {
      if (!link.senders.has(track)) link.senders.set(track, link.pc.addTrack(track, this.localStream));
    }
  }

  #outcome(link, outcome, reason) {
    if (link.reported) return;
    link.reported = true;
    clearTimeout(link.timer);
    const fields = { peer: link.peerId, outcome };
    if (reason) fields.reason = reason;
    if (outcome !== "connected") {
      this.client.report("peer-connection", fields);
      return;
    }
    fields.ms = round(performance.now() - link.startedAt);
    // How it connected (relay: through TURN), from the selected pair.
    pathOf(link.pc).then((path) => {
      if (path) {
        fields.path = path;
        link.path = path;
      }
      this.client.report("peer-connection", fields);
      if (this.links.get(link.peerId) === link) this.#changed(link);
    });
  }

  #drop(peerId) {
    const link = this.links.get(peerId);
    if (!link) return;
    clearTimeout(link.timer);
    link.channel?.close();
    link.pc.close();
    this.links.delete(peerId);
    this.dispatchEvent(new CustomEvent("peer-removed", { detail: { peerId } }));
  }

  #changed(link) {
    this.dispatchEvent(
      new CustomEvent("peer", { detail: { peerId: link.peerId, state: link.pc.connectionState, path: link.path } }),
    );
  }
}

/** ws(s)://<this host>/ws */
export function defaultUrl(location = globalThis.location) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}

/** The selected pair's local candidate type; undefined when unknown. */
async function pathOf(pc) {
  try {
    return selectedPath(await pc.getStats());
  } catch {
    return undefined; // closed meanwhile
  }
}

/** Adds a candidate; one from a rolled-back or ignored offer just fails. */
async function addCandidate(pc, candidate) {
  try {
    await pc.addIceCandidate(candidate);
  } catch (error) {
    console.debug("chatsubo: stale ICE candidate ignored", error);
  }
}

function round(ms) {
  return Math.round(ms * 10) / 10;
}
