// client.js (the page's connection logic) driven message by message: node has no WebSocket, so a
// scripted stand-in delivers the exact frames a server would send. The real service is used by
// e2e.test.mjs; these cases cover what it can't be made to do on demand (a gap, a duplicate, a
// wrong-sized snapshot) and the reconnect backoff.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { PictureClient } from '../broadcast-service/static/client.js';
import { Raster, decodeClientMsg, encodeServerMsg } from '../broadcast-service/static/protocol.js';

import { makePng } from './png-fixtures.mjs';

/** Records what the client sends; the test plays the server through `deliver`. */
class ScriptedSocket {
  static OPEN = 1;
  static all = [];

  constructor(url) {
    this.url = url;
    this.readyState = ScriptedSocket.OPEN;
    this.sent = [];
    this.closed = null;
    ScriptedSocket.all.push(this);
  }

  send(bytes) {
    this.sent.push(decodeClientMsg(bytes));
  }

  close(code, reason) {
    this.closed = { code, reason };
    this.readyState = 3;
    queueMicrotask(() => this.onclose?.({ code, reason }));
  }

  deliver(msg) {
    const bytes = encodeServerMsg(msg);
    this.onmessage({ data: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length) });
  }

  /** The server going away. */
  drop(code = 1012) {
    this.readyState = 3;
    this.onclose({ code, reason: '' });
  }
}
globalThis.WebSocket = ScriptedSocket;

const W = 5;
const H = 3;
const RED = [255, 0, 0, 255];
const HALF_BLUE = [0, 0, 255, 128];

function welcome({ clientId = 7n, seq = 10n, pixels = new Raster(W, H).pixels, pending = [], size = [W, H] } = {}) {
  return {
    Welcome: {
      client_id: clientId,
      width: size[0],
      height: size[1],
      snapshot_seq: seq,
      snapshot_png: makePng(pixels, W, H, { seq: String(seq) }),
      pending,
    },
  };
}

function update(seq, op, clientId = 99n, clientSeq = 1n) {
  return { seq, client_id: clientId, client_seq: clientSeq, op };
}

function expected(ops) {
  const r = new Raster(W, H);
  for (const op of ops) r.apply(op);
  return r.pixels;
}

/** Resolves once `fn()` holds; every step of the client is a microtask or a short timer. */
async function until(what, fn, ms = 5000) {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setImmediate(r));
  }
}

function newClient(options = {}) {
  ScriptedSocket.all = [];
  const client = new PictureClient('ws://test/pictures/p/ws', { pingEvery: 1e9, ...options });
  const events = [];
  for (const type of ['state', 'picture', 'change', 'previews', 'presence', 'rejected', 'servererror', 'durable']) {
    client.addEventListener(type, (e) => events.push([type, e.detail]));
  }
  client.start();
  return { client, events, socket: () => ScriptedSocket.all.at(-1) };
}

test('welcome: snapshot plus pending; messages behind it wait for the PNG to decode', async () => {
  const { client, socket } = newClient();
  const p1 = { Pixels: { color: RED, points: [[0, 0]] } };
  const p2 = { Rect: { x: 1, y: 1, w: 2, h: 2, color: HALF_BLUE } };
  const p3 = { Stroke: { color: HALF_BLUE, width: 1, points: [[0, 2], [4, 2]] } };
  // Delivered back to back: the Updates arrive while the Welcome's PNG is still inflating.
  socket().deliver(welcome({ pending: [update(11n, p1), update(12n, p2)] }));
  socket().deliver({ Updates: [update(13n, p3)] });
  socket().deliver({ Presence: { clients: 2 } });
  await until('presence', () => client.presence === 2);
  assert.equal(client.state, 'connected');
  assert.equal(client.seq, 13n);
  assert.equal(client.clientId, 7n);
  assert.deepStrictEqual(client.raster.pixels, expected([p1, p2, p3]));
  client.stop();
});

test('own ops: pending until the echo, or until Rejected', async () => {
  const { client, events, socket } = newClient();
  assert.equal(client.send({ Clear: { color: RED } }), null, 'nothing is sent before the Welcome');
  socket().deliver(welcome());
  await until('connected', () => client.state === 'connected');
  const op = { Pixels: { color: RED, points: [[4, 2]] } };
  const a = client.send(op);
  const b = client.send(op);
  assert.deepStrictEqual([a, b], [1n, 2n]);
  assert.deepStrictEqual(socket().sent, [
    { Draw: { client_seq: 1n, op } },
    { Draw: { client_seq: 2n, op } },
  ]);
  assert.equal(client.pending.size, 2);
  socket().deliver({ Updates: [update(11n, op, 7n, 1n)] });
  socket().deliver({ Rejected: { client_seq: 2n, reason: 'rate limited' } });
  await until('both answered', () => client.pending.size === 0);
  assert.equal(client.seq, 11n);
  assert.deepStrictEqual(client.raster.pixels, expected([op]));
  assert.deepStrictEqual(
    events.filter(([type]) => type === 'rejected'),
    [['rejected', { op, reason: 'rate limited' }]],
  );
  // Another client's update with our client_seq is not our echo.
  client.send(op);
  socket().deliver({ Updates: [update(12n, op, 8n, 3n)] });
  await until('applied', () => client.seq === 12n);
  assert.equal(client.pending.size, 1);
  client.stop();
});

for (const [name, bad] of [
  ['a gap', { Updates: [update(12n, { Clear: { color: RED } })] }],
  ['a duplicate', { Updates: [update(10n, { Clear: { color: RED } })] }],
  ['a wrong-sized snapshot', welcome({ size: [W + 1, H] })],
  ['an undecodable frame', null],
]) {
  test(`${name} makes the client resynchronise with a fresh Welcome`, async () => {
    const { client, socket } = newClient({ backoff: 1, maxBackoff: 1 });
    socket().deliver(welcome());
    await until('connected', () => client.state === 'connected');
    const first = socket();
    if (bad === null) first.onmessage({ data: new Uint8Array([9, 0, 0, 0]).buffer });
    else first.deliver(bad);
    await until('the socket closed', () => first.closed !== null);
    assert.deepStrictEqual(first.closed, { code: 4000, reason: 'resync' });
    await until('a new socket', () => socket() !== first);
    assert.equal(client.state, 'reconnecting');
    // The fresh Welcome replaces the picture entirely, whatever was applied before.
    const pixels = expected([{ Clear: { color: HALF_BLUE } }]);
    socket().deliver(welcome({ seq: 40n, pixels, clientId: 8n }));
    await until('reconnected', () => client.state === 'connected');
    assert.equal(client.welcomes, 2);
    assert.equal(client.seq, 40n);
    assert.equal(client.clientId, 8n);
    assert.deepStrictEqual(client.raster.pixels, pixels);
    client.stop();
  });
}

test('reconnect backoff doubles up to the maximum, jittered, and resets after a Welcome', async () => {
  const delays = [];
  const realSetTimeout = globalThis.setTimeout;
  const realRandom = Math.random;
  const { client, socket } = newClient({ backoff: 100, maxBackoff: 1000 });
  try {
    Math.random = () => 0.5;
    // Capture the reconnect delays instead of waiting for them.
    globalThis.setTimeout = (fn, ms) => {
      delays.push(ms);
      return realSetTimeout(fn, 0);
    };
    for (let i = 0; i < 6; i++) {
      const s = socket();
      s.drop();
      await until('the next attempt', () => socket() !== s);
    }
    // 0.75 = 0.5 + random/2: each delay is 50..100% of the doubled one.
    assert.deepStrictEqual(delays, [75, 150, 300, 600, 750, 750]);
    socket().deliver(welcome());
    await until('connected', () => client.state === 'connected');
    const s = socket();
    s.drop();
    await until('the next attempt', () => socket() !== s);
    assert.equal(delays.at(-1), 75);
  } finally {
    globalThis.setTimeout = realSetTimeout;
    Math.random = realRandom;
    client.stop();
  }
});

test('a lost connection drops the previews of ops that were never answered', async () => {
  const { client, socket } = newClient({ backoff: 1, maxBackoff: 1 });
  socket().deliver(welcome());
  await until('connected', () => client.state === 'connected');
  client.send({ Clear: { color: RED } });
  assert.equal(client.pending.size, 1);
  socket().drop(1006);
  assert.equal(client.pending.size, 0);
  assert.equal(client.send({ Clear: { color: RED } }), null);
  client.stop();
});

// ---- sessions: durable acknowledgements and resuming (PROTOCOL.md §10, §11) -------------------

const K = 0xfeedn;

function resumedWelcome(seq, pending = []) {
  return {
    Welcome: { client_id: K, width: W, height: H, snapshot_seq: seq, snapshot_png: new Uint8Array(0), pending },
  };
}

test('without a session the URL and the messages are the plain ones', async () => {
  const { client, socket } = newClient({ backoff: 1, maxBackoff: 1 });
  assert.equal(socket().url, 'ws://test/pictures/p/ws');
  socket().deliver(welcome());
  await until('connected', () => client.state === 'connected');
  const first = socket();
  first.drop(1006);
  await until('a new socket', () => socket() !== first);
  assert.equal(socket().url, 'ws://test/pictures/p/ws', 'no since without a session');
  // A Durable it did not ask for breaks the contract: resynchronise.
  socket().deliver(welcome());
  await until('connected', () => client.state === 'connected');
  const second = socket();
  second.deliver({ Durable: { seq: 5n } });
  await until('the socket closed', () => second.closed !== null);
  assert.deepStrictEqual(second.closed, { code: 4000, reason: 'resync' });
  client.stop();
});

test('a session resumes: keeps the picture, resends exactly the ops the Session message does not cover', async () => {
  const { client, events, socket } = newClient({ backoff: 1, maxBackoff: 1, session: K });
  const url = new URL(socket().url);
  assert.equal(url.searchParams.get('durable'), '1');
  assert.equal(url.searchParams.get('session'), String(K));
  assert.equal(url.searchParams.get('since'), null, 'nothing to resume from yet');
  const first = socket();
  first.deliver(welcome({ clientId: K, seq: 10n }));
  await until('the picture', () => client.raster !== null);
  // Nothing is sent until the Session message.
  assert.equal(client.send({ Clear: { color: RED } }), null);
  first.deliver({ Session: { session: K, last_client_seq: 0n } });
  await until('connected', () => client.state === 'connected');
  const ops = [1, 2, 3, 4].map((x) => ({ Pixels: { color: HALF_BLUE, points: [[x, 1]] } }));
  assert.deepStrictEqual(ops.map((op) => client.send(op)), [1n, 2n, 3n, 4n]);
  first.deliver({ Updates: [update(11n, ops[0], K, 1n)] });
  first.deliver({ Durable: { seq: 11n } });
  await until('durable 11', () => client.durableSeq === 11n);
  assert.equal(client.saved, false, 'ops 2..4 are in flight');

  // The connection drops: the unanswered ops stay (as previews) for the next connection.
  first.drop(1006);
  assert.equal(client.pending.size, 3);
  await until('a new socket', () => socket() !== first);
  const second = socket();
  assert.equal(new URL(second.url).searchParams.get('since'), '11');
  const raster = client.raster;
  // Resumed at 11: op 2's echo (lost with the connection) comes in pending; op 3 was sequenced
  // too (the Session message says so) and its echo follows; op 4 never arrived.
  second.deliver(resumedWelcome(11n, [update(12n, ops[1], K, 2n)]));
  second.deliver({ Session: { session: K, last_client_seq: 3n } });
  await until('connected again', () => client.state === 'connected' && client.welcomes === 2);
  assert.equal(client.raster, raster, 'the picture is kept');
  assert.equal(client.resumes, 1);
  assert.deepStrictEqual(second.sent, [{ Draw: { client_seq: 4n, op: ops[3] } }], 'only op 4, once');
  assert.equal(client.resent, 1);
  second.deliver({ Updates: [update(13n, ops[2], K, 3n), update(14n, ops[3], K, 4n)] });
  await until('applied', () => client.seq === 14n);
  assert.equal(client.pending.size, 0);
  assert.deepStrictEqual(client.raster.pixels, expected(ops));
  assert.equal(client.saved, false, 'storage is at 11');
  second.deliver({ Durable: { seq: 14n } });
  await until('saved', () => client.saved);
  assert.ok(events.some(([type]) => type === 'durable'));
  // A Durable beyond what was applied breaks the contract.
  second.deliver({ Durable: { seq: 15n } });
  await until('the socket closed', () => second.closed !== null);
  assert.deepStrictEqual(second.closed, { code: 4000, reason: 'resync' });
  client.stop();
});

test('a session given a full Welcome takes the picture and still resends only what is missing', async () => {
  const { client, socket } = newClient({ backoff: 1, maxBackoff: 1, session: K });
  socket().deliver(welcome({ clientId: K, seq: 10n }));
  socket().deliver({ Session: { session: K, last_client_seq: 0n } });
  await until('connected', () => client.state === 'connected');
  const ops = [1, 2].map((x) => ({ Pixels: { color: RED, points: [[x, 0]] } }));
  ops.forEach((op) => client.send(op));
  const first = socket();
  first.drop(1006);
  await until('a new socket', () => socket() !== first);
  // The log no longer reaches back to 10: a full Welcome at 20 that has op 1 in its snapshot.
  const pixels = expected([ops[0]]);
  socket().deliver(welcome({ clientId: K, seq: 20n, pixels }));
  socket().deliver({ Session: { session: K, last_client_seq: 1n } });
  await until('connected again', () => client.state === 'connected' && client.welcomes === 2);
  assert.equal(client.seq, 20n);
  assert.equal(client.resumes, 0);
  assert.deepStrictEqual(socket().sent, [{ Draw: { client_seq: 2n, op: ops[1] } }]);
  assert.deepStrictEqual([...client.pending.keys()], [2n]);
  // A resumed Welcome at a seq we did not ask for is a broken promise: start over, in full.
  const second = socket();
  second.drop(1006);
  await until('a new socket', () => socket() !== second);
  const third = socket();
  third.deliver(resumedWelcome(19n));
  await until('the socket closed', () => third.closed !== null);
  await until('a new socket', () => socket() !== third);
  assert.equal(new URL(socket().url).searchParams.get('since'), null, 'a full Welcome is asked for');
  client.stop();
});

test('a session replaced by a newer connection (4001) stops instead of taking it back', async () => {
  const { client, events, socket } = newClient({ backoff: 1, maxBackoff: 1, session: K });
  socket().deliver(welcome({ clientId: K }));
  socket().deliver({ Session: { session: K, last_client_seq: 0n } });
  await until('connected', () => client.state === 'connected');
  const first = socket();
  first.drop(4001);
  assert.equal(client.state, 'stopped');
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(socket(), first, 'no reconnect');
  assert.ok(events.some(([type, d]) => type === 'servererror' && d.code === 4001));
  client.stop();
});
