// The drawing page's connection to one picture, without any DOM: the WebSocket, the picture
// as an RGBA buffer that is the page's source of truth, the ops sent but not yet sequenced
// (shown as previews), and reconnection. app.js renders what this module reports.
//
// Invariants (PROTOCOL.md §3): after a Welcome the buffer is the snapshot plus every update in
// `seq` order, each applied exactly once. Anything that would break that (a gap, a duplicate, a
// picture of the wrong size) is treated like a lost connection: reconnect, and the fresh Welcome
// replaces the picture.
//
// With a session key (`options.session`, PROTOCOL.md §10 and §11) the client also asks for
// `Durable` acknowledgements and resumes instead of starting over: it reconnects with
// `since=<last seq applied>&session=K`, keeps its picture when the Welcome carries no snapshot,
// keeps the ops it sent that saw no echo, and once the `Session` message says which of them the
// picture has, sends the others again, once, in order, with their own client_seq (the server
// drops a copy of one it already sequenced). `saved` tells whether storage has all of our ops.

import { decodeServerMsg, encodeClientMsg } from './codec.js';
import { decodePng } from './png.js';
import { Raster } from './raster.js';

/** Connection settings; every delay in milliseconds. */
export const DEFAULTS = {
  // First reconnect delay, doubled after every failed attempt up to `maxBackoff`; each delay is
  // jittered to 50..100% so that many pages dropped at once don't return in lockstep.
  backoff: 250,
  maxBackoff: 10_000,
  // A Ping every `pingEvery` keeps idle proxies from closing the socket; no Pong within
  // `pongTimeout` means the link is dead even if the socket has not noticed yet.
  pingEvery: 15_000,
  pongTimeout: 10_000,
  // Largest picture side the page accepts in a Welcome (the service's default maximum).
  maxSide: 4096,
  // A nonzero u64 (BigInt): connect as this session, with `durable=1`, and resume after a
  // disconnect (PROTOCOL.md §10, §11). null: neither, the connection is exactly a plain one.
  session: null,
};

/** A random nonzero u64 session key, for one page's lifetime. */
export function randomSession() {
  const words = new BigUint64Array(1);
  do crypto.getRandomValues(words);
  while (words[0] === 0n);
  return words[0];
}

/**
 * Emits `state` (connection state changed), `picture` (a Welcome replaced the picture),
 * `change` (detail: the inclusive box updates changed), `previews` (sent-but-unsequenced ops
 * changed), `presence`, `rejected` (detail: {op, reason}), `servererror` (detail: {code,
 * message}) and, with a session, `durable` (`durableSeq` or our own ops changed: see `saved`).
 */
export class PictureClient extends EventTarget {
  constructor(url, options = {}) {
    super();
    this.url = url;
    this.options = { ...DEFAULTS, ...options };
    // The picture as last synchronised; null until the first Welcome.
    this.raster = null;
    // Last applied sequence number (BigInt); null until the first Welcome.
    this.seq = null;
    // Our id on the current connection: an update with it is the echo of our own op.
    this.clientId = null;
    // Clients connected to the picture, from the last Presence.
    this.presence = 0;
    // 'connecting' | 'connected' | 'reconnecting' | 'stopped'.
    this.state = 'connecting';
    // Welcomes received so far: more than one means the page has reconnected at least once.
    this.welcomes = 0;
    // When the next reconnect attempt starts (ms since epoch), for the status line.
    this.retryAt = null;
    // Ops sent and not yet echoed or rejected, by client_seq (in client_seq order): on the
    // current connection only, or with a session across connections until they are resent.
    this.pending = new Map();
    // The session key (BigInt) or null; see DEFAULTS.session.
    this.session = this.options.session;
    // With a session: the highest seq the server said is in storage, the seq of our latest
    // echoed op, and whether the current connection's Session message has come (until then
    // nothing is sent: the ops to resend go first).
    this.durableSeq = 0n;
    this.ownSeq = 0n;
    this.sessionAnswered = false;
    // The next connection asks for a full Welcome (a resumed one did not fit).
    this.fullWelcomeNext = false;
    // Welcomes that kept the picture (resumed), and ops sent again after a Session message.
    this.resumes = 0;
    this.resent = 0;
    // client_seq keeps increasing across connections, so a late reply can't be mistaken.
    this.nextClientSeq = 1n;
    // Current socket; handlers of an older socket check it and ignore themselves.
    this.ws = null;
    // Messages of one socket are handled strictly in order, even while a Welcome's PNG is
    // being decoded asynchronously.
    this.inbox = Promise.resolve();
    this.attempt = 0;
    this.timers = { retry: null, ping: null, pong: null };
    this.nonce = 0n;
  }

  start() {
    this.connect();
  }

  stop() {
    this.setState('stopped');
    this.clearTimers();
    if (this.ws) this.ws.close(1000, 'page closed');
    this.ws = null;
  }

  /** Sends an op; returns its client_seq, or null (nothing sent) while not connected. */
  send(op) {
    if (this.state !== 'connected' || this.ws === null || this.ws.readyState !== WebSocket.OPEN) return null;
    if (this.session !== null && !this.sessionAnswered) return null;
    const clientSeq = this.nextClientSeq++;
    this.ws.send(encodeClientMsg({ Draw: { client_seq: clientSeq, op } }));
    this.pending.set(clientSeq, op);
    this.emit('previews');
    return clientSeq;
  }

  /** With a session: Durable has caught up with our latest echoed op and nothing is in flight. */
  get saved() {
    return this.pending.size === 0 && this.durableSeq >= this.ownSeq;
  }

  /** The URL of the next connection: the page's own, plus the session's parameters. */
  connectUrl() {
    if (this.session === null) return this.url;
    const url = new URL(this.url);
    url.searchParams.set('durable', '1');
    url.searchParams.set('session', String(this.session));
    if (this.raster !== null && this.seq !== null && !this.fullWelcomeNext) {
      url.searchParams.set('since', String(this.seq));
    }
    return url.toString();
  }

  connect() {
    this.clearTimers();
    this.retryAt = null;
    this.sessionAnswered = false;
    const ws = new WebSocket(this.connectUrl());
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    this.inbox = Promise.resolve();
    ws.onmessage = (event) => {
      if (this.ws !== ws) return;
      this.inbox = this.inbox
        .then(() => (this.ws === ws ? this.handle(ws, event.data) : undefined))
        .catch((err) => this.fail(ws, err));
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      // With a session, ops that saw no echo are kept: the next connection's Session message
      // says which of them to send again.
      if (this.session === null) this.dropPending();
      if (this.state === 'stopped') return;
      console.info('raster: connection closed', { code: event.code, reason: event.reason });
      if (event.code === 4001) {
        // PROTOCOL.md §11: a newer connection of this session replaced this one; reconnecting
        // would take it back from that one.
        this.dropPending();
        this.setState('stopped');
        this.emit('servererror', { code: 4001, message: 'this page was opened again elsewhere' });
        return;
      }
      if (event.code === 4401) {
        // PROTOCOL.md §13: the page's token expired; reconnecting with it would be refused.
        this.dropPending();
        this.setState('stopped');
        this.emit('servererror', { code: 4401, message: 'token expired: reload the page with a new token' });
        return;
      }
      this.scheduleReconnect();
    };
    ws.onerror = () => {
      // Always followed by onclose, which reconnects.
    };
  }

  /** Treats a broken promise of §3 like a lost connection: a fresh Welcome fixes it. */
  fail(ws, err) {
    console.warn('raster: resynchronising', err);
    this.fullWelcomeNext = true;
    if (this.ws === ws) ws.close(4000, 'resync');
  }

  scheduleReconnect() {
    this.clearTimers();
    const { backoff, maxBackoff } = this.options;
    const delay = Math.min(maxBackoff, backoff * 2 ** this.attempt) * (0.5 + Math.random() / 2);
    this.attempt = Math.min(this.attempt + 1, 30);
    this.retryAt = Date.now() + delay;
    this.setState('reconnecting');
    this.timers.retry = setTimeout(() => this.connect(), delay);
  }

  clearTimers() {
    clearTimeout(this.timers.retry);
    clearInterval(this.timers.ping);
    clearTimeout(this.timers.pong);
    this.timers = { retry: null, ping: null, pong: null };
  }

  async handle(ws, data) {
    if (!(data instanceof ArrayBuffer)) throw new Error('text frame from the server');
    const msg = decodeServerMsg(new Uint8Array(data));
    const name = Object.keys(msg)[0];
    const v = msg[name];
    switch (name) {
      case 'Welcome':
        await this.welcome(ws, v);
        break;
      case 'Updates':
        if (this.raster === null || this.clientId === null) throw new Error('Updates before Welcome');
        this.applyUpdates(v);
        break;
      case 'Rejected': {
        const op = this.pending.get(v.client_seq) ?? null;
        if (this.pending.delete(v.client_seq)) this.emit('previews');
        this.emit('rejected', { op, reason: v.reason });
        break;
      }
      case 'Error':
        this.emit('servererror', v);
        break;
      case 'Pong':
        clearTimeout(this.timers.pong);
        this.timers.pong = null;
        break;
      case 'Presence':
        this.presence = v.clients;
        this.emit('presence');
        break;
      case 'Durable':
        // PROTOCOL.md §10: asked for, never beyond what we applied, always advancing.
        if (this.session === null) throw new Error('Durable without asking');
        if (this.seq === null || v.seq > this.seq) throw new Error(`Durable ${v.seq} beyond seq ${this.seq}`);
        if (v.seq > this.durableSeq) {
          this.durableSeq = v.seq;
          this.emit('durable');
        }
        break;
      case 'Session':
        this.sessionMessage(ws, v);
        break;
      default:
        // WelcomeLz4: never asked for.
        throw new Error(`unexpected ${name}`);
    }
  }

  /**
   * PROTOCOL.md §11: our ops up to `last_client_seq` are in the picture (their echoes may have
   * been lost with a connection); the others that saw no echo are sent again, once, in order,
   * before anything new.
   */
  sessionMessage(ws, v) {
    if (this.session === null || v.session !== this.session) throw new Error(`Session message for ${v.session}`);
    if (this.sessionAnswered) throw new Error('a second Session message');
    let settled = false;
    for (const clientSeq of [...this.pending.keys()]) {
      if (clientSeq <= v.last_client_seq) {
        this.pending.delete(clientSeq);
        settled = true;
      }
    }
    const resend = [...this.pending.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    for (const [clientSeq, op] of resend) {
      ws.send(encodeClientMsg({ Draw: { client_seq: clientSeq, op } }));
    }
    this.resent += resend.length;
    this.sessionAnswered = true;
    this.setState('connected');
    if (settled) this.emit('previews');
    this.emit('durable');
  }

  async welcome(ws, v) {
    // PROTOCOL.md §11: no snapshot means "resumed at the seq you asked for": the picture we
    // have stays, and `pending` continues it.
    const resumed = v.snapshot_png.length === 0;
    let raster;
    if (resumed) {
      if (this.session === null || this.raster === null || v.snapshot_seq !== this.seq) {
        throw new Error(`a Welcome without a snapshot at seq ${v.snapshot_seq}, we have ${this.seq}`);
      }
      if (this.raster.width !== v.width || this.raster.height !== v.height) {
        throw new Error(`a resumed Welcome of ${v.width}x${v.height}, we have another size`);
      }
      raster = this.raster;
    } else {
      const png = await decodePng(v.snapshot_png, { maxSide: this.options.maxSide });
      if (this.ws !== ws) return;
      if (png.width !== v.width || png.height !== v.height) {
        throw new Error(`snapshot is ${png.width}x${png.height}, Welcome says ${v.width}x${v.height}`);
      }
      raster = new Raster(v.width, v.height, png.pixels);
    }
    let seq = v.snapshot_seq;
    let box = null;
    for (const u of v.pending) {
      if (u.seq !== seq + 1n) throw new Error(`pending jumps from ${seq} to ${u.seq}`);
      box = union(box, raster.apply(u.op));
      seq = u.seq;
      if (this.session !== null && u.client_id === this.session) this.echoed(u);
    }
    // Without a session, ops sent on an earlier connection are in this picture or lost: either
    // way their previews go. With one, the Session message that follows settles them.
    if (this.session === null) this.pending.clear();
    this.raster = raster;
    this.seq = seq;
    this.clientId = v.client_id;
    this.welcomes += 1;
    this.fullWelcomeNext = false;
    this.attempt = 0;
    this.startPings(ws);
    // With a session, drawing waits for the Session message that follows every Welcome
    // (a resync's too).
    if (this.session === null) this.setState('connected');
    else this.sessionAnswered = false;
    if (resumed) {
      this.resumes += 1;
      this.emit('change', box);
    } else {
      this.emit('picture');
    }
    this.emit('previews');
  }

  /** Our own op `u` was sequenced: its preview goes, and `saved` now waits for its seq. */
  echoed(u) {
    this.pending.delete(u.client_seq);
    if (u.seq > this.ownSeq) this.ownSeq = u.seq;
  }

  applyUpdates(updates) {
    let box = null;
    let echoed = false;
    for (const u of updates) {
      if (u.seq !== this.seq + 1n) throw new Error(`update ${u.seq} after ${this.seq}`);
      box = union(box, this.raster.apply(u.op));
      this.seq = u.seq;
      if (u.client_id === this.clientId) {
        if (this.pending.has(u.client_seq)) echoed = true;
        this.echoed(u);
      }
    }
    this.emit('change', box);
    if (echoed) this.emit('previews');
    if (echoed && this.session !== null) this.emit('durable');
  }

  startPings(ws) {
    clearInterval(this.timers.ping);
    this.timers.ping = setInterval(() => {
      if (this.ws !== ws || ws.readyState !== WebSocket.OPEN) return;
      ws.send(encodeClientMsg({ Ping: { nonce: ++this.nonce } }));
      if (this.timers.pong === null) {
        this.timers.pong = setTimeout(() => this.fail(ws, new Error('no pong')), this.options.pongTimeout);
      }
    }, this.options.pingEvery);
  }

  dropPending() {
    if (this.pending.size === 0) return;
    this.pending.clear();
    this.emit('previews');
  }

  setState(state) {
    this.state = state;
    this.emit('state');
  }

  emit(type, detail = null) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

/** The smallest inclusive box holding both (either may be null). */
export function union(a, b) {
  if (a === null) return b;
  if (b === null) return a;
  return {
    x0: Math.min(a.x0, b.x0),
    y0: Math.min(a.y0, b.y0),
    x1: Math.max(a.x1, b.x1),
    y1: Math.max(a.y1, b.y1),
  };
}
