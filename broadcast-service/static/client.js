// The drawing page's connection to one picture, without any DOM: the WebSocket, the picture
// as an RGBA buffer that is the page's source of truth, the ops sent but not yet sequenced
// (shown as previews), and reconnection. app.js renders what this module reports.
//
// Invariants (PROTOCOL.md §3): after a Welcome the buffer is the snapshot plus every update in
// `seq` order, each applied exactly once. Anything that would break that (a gap, a duplicate, a
// picture of the wrong size) is treated like a lost connection: reconnect, and the fresh Welcome
// replaces the picture.

import { Raster, decodePng, decodeServerMsg, encodeClientMsg } from './protocol.js';

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
};

/**
 * Emits `state` (connection state changed), `picture` (a Welcome replaced the picture),
 * `change` (detail: the inclusive box updates changed), `previews` (sent-but-unsequenced ops
 * changed), `presence`, `rejected` (detail: {op, reason}) and `servererror` (detail: {code,
 * message}).
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
    // Ops sent on the current connection and not yet echoed or rejected, by client_seq.
    this.pending = new Map();
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
    const clientSeq = this.nextClientSeq++;
    this.ws.send(encodeClientMsg({ Draw: { client_seq: clientSeq, op } }));
    this.pending.set(clientSeq, op);
    this.emit('previews');
    return clientSeq;
  }

  connect() {
    this.clearTimers();
    this.retryAt = null;
    const ws = new WebSocket(this.url);
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
      this.dropPending();
      if (this.state === 'stopped') return;
      console.info('raster: connection closed', { code: event.code, reason: event.reason });
      this.scheduleReconnect();
    };
    ws.onerror = () => {
      // Always followed by onclose, which reconnects.
    };
  }

  /** Treats a broken promise of §3 like a lost connection: a fresh Welcome fixes it. */
  fail(ws, err) {
    console.warn('raster: resynchronising', err);
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
    }
  }

  async welcome(ws, v) {
    const png = await decodePng(v.snapshot_png, { maxSide: this.options.maxSide });
    if (this.ws !== ws) return;
    if (png.width !== v.width || png.height !== v.height) {
      throw new Error(`snapshot is ${png.width}x${png.height}, Welcome says ${v.width}x${v.height}`);
    }
    const raster = new Raster(v.width, v.height, png.pixels);
    let seq = v.snapshot_seq;
    for (const u of v.pending) {
      if (u.seq !== seq + 1n) throw new Error(`pending jumps from ${seq} to ${u.seq}`);
      raster.apply(u.op);
      seq = u.seq;
    }
    // Ops sent on an earlier connection are in this picture or lost: either way their previews go.
    this.pending.clear();
    this.raster = raster;
    this.seq = seq;
    this.clientId = v.client_id;
    this.welcomes += 1;
    this.attempt = 0;
    this.startPings(ws);
    this.setState('connected');
    this.emit('picture');
    this.emit('previews');
  }

  applyUpdates(updates) {
    let box = null;
    let echoed = false;
    for (const u of updates) {
      if (u.seq !== this.seq + 1n) throw new Error(`update ${u.seq} after ${this.seq}`);
      box = union(box, this.raster.apply(u.op));
      this.seq = u.seq;
      if (u.client_id === this.clientId && this.pending.delete(u.client_seq)) echoed = true;
    }
    this.emit('change', box);
    if (echoed) this.emit('previews');
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
