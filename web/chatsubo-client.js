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
 * The signaling connection. Events (all CustomEvent, payload in `detail`):
 * `state` ({state: "connecting"|"open"|"reconnecting"|"closed"}), `welcome`,
 * `joined`, `peer-joined`, `peer-left`, `offer`, `answer`, `ice-candidate`,
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
    this.timers = { retry: null, connect: null, ping: null };
    this.lastRttMs = null;
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
      default:
        break;
    }
    this.dispatchEvent(new CustomEvent(message.type, { detail: message }));
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
 * Events: `peer` ({peerId, state}), `message` ({from, text}), `track`
 * ({peerId, streams}), `peer-removed` ({peerId}).
 */
export class Mesh extends EventTarget {
  constructor(client, options = {}) {
    super();
    this.client = client;
    this.options = {
      rtcConfig: { iceServers: [] },
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

  #link(peerId) {
    if (this.links.has(peerId)) return this.links.get(peerId);
    const pc = new RTCPeerConnection(this.options.rtcConfig);
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
    };
    this.links.set(peerId, link);

    // A pre-negotiated channel: both sides open it, no ondatachannel race.
    link.channel = pc.createDataChannel(this.options.channel, { negotiated: true, id: 0 });
    link.channel.onmessage = (e) =>
      this.dispatchEvent(new CustomEvent("message", { detail: { from: peerId, text: String(e.data) } }));
    link.channel.onopen = () => this.#changed(link);
    link.channel.onclose = () => this.#changed(link);

    pc.onnegotiationneeded = async () => {
      try {
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
        pc.restartIce();
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
    if (outcome === "connected") fields.ms = round(performance.now() - link.startedAt);
    if (reason) fields.reason = reason;
    this.client.report("peer-connection", fields);
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
      new CustomEvent("peer", { detail: { peerId: link.peerId, state: link.pc.connectionState } }),
    );
  }
}

/** ws(s)://<this host>/ws */
export function defaultUrl(location = globalThis.location) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
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
