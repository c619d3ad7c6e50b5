// protocol.js (the browser's codec, rasterizer and PNG decoder) against the contract: every
// case of the shared test vectors, the §4 line loop, bounded decoding, and PNGs made by node's
// zlib with every row filter.
//
// Run: node --test web-tests/vectors.test.mjs (or web-tests/run.sh).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import {
  DecodeError,
  PngError,
  Raster,
  decodeClientMsg,
  decodePng,
  decodeServerMsg,
  encodeClientMsg,
  encodeServerMsg,
  lineClipped,
  lineReference,
} from '../broadcast-service/static/protocol.js';

import { makePng, testPixels } from './png-fixtures.mjs';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const sharedVectors = process.env.SHARED_VECTORS ?? join(repo, '..', 'shared', 'vectors');

// Fields that are u64 on the wire: the decoder gives BigInt for them.
const U64_FIELDS = new Set(['seq', 'client_id', 'client_seq', 'snapshot_seq', 'nonce']);

/** JSON.parse that keeps integers above 2^53 exact: they come back as decimal strings. */
function parseExact(text) {
  return JSON.parse(text.replace(/([[:,]\s*)(-?\d{16,})(?=\s*[,\]}])/g, '$1"$2"'));
}

/** The vectors' JSON form -> protocol.js values: `*_hex` to Uint8Array, u64 to BigInt. */
function fromJson(value, key) {
  if (Array.isArray(value)) return value.map((v) => fromJson(v));
  if (value !== null && typeof value === 'object') {
    const out = {};
    for (const [k, v] of Object.entries(value)) {
      if (k.endsWith('_hex')) out[k.slice(0, -4)] = Uint8Array.from(Buffer.from(v, 'hex'));
      else out[k] = fromJson(v, k);
    }
    return out;
  }
  if (U64_FIELDS.has(key)) return BigInt(value);
  if (typeof value === 'string' && /^-?\d+$/.test(value)) return Number(value);
  return value;
}

function loadCases(path) {
  return parseExact(readFileSync(path, 'utf8'));
}

function hex(bytes) {
  return Buffer.from(bytes).toString('hex');
}

function rasterize(c) {
  const raster = new Raster(c.width, c.height);
  for (const op of c.ops) raster.apply(fromJson(op));
  return raster.pixels;
}

const rasterFiles = [join(sharedVectors, 'raster.json'), join(repo, 'protocol', 'vectors', 'raster-extra.json')];

for (const file of rasterFiles) {
  if (!existsSync(file)) {
    if (file.endsWith('raster.json')) throw new Error(`missing shared vectors at ${file}`);
    continue;
  }
  for (const c of loadCases(file)) {
    test(`raster ${file.split('/').slice(-1)[0]} ${c.name}`, () => {
      const pixels = rasterize(c);
      if (c.rgba_hex !== undefined) assert.equal(hex(pixels), c.rgba_hex);
      assert.equal(createHash('sha256').update(pixels).digest('hex'), c.rgba_sha256);
    });
  }
}

for (const c of loadCases(join(sharedVectors, 'wire.json'))) {
  test(`wire ${c.name}`, () => {
    const message = fromJson(c.message);
    const frame = Uint8Array.from(Buffer.from(c.bincode_hex, 'hex'));
    const [encode, decode] =
      c.type === 'ClientMsg' ? [encodeClientMsg, decodeClientMsg] : [encodeServerMsg, decodeServerMsg];
    assert.equal(hex(encode(message)), c.bincode_hex);
    assert.deepStrictEqual(decode(frame), message);
    // Bounded decoding: every strict prefix and any trailing byte make the frame undecodable.
    for (let cut = 0; cut < frame.length; cut++) {
      assert.throws(() => decode(frame.subarray(0, cut)), DecodeError, `prefix of ${cut} bytes`);
    }
    const longer = new Uint8Array(frame.length + 1);
    longer.set(frame);
    assert.throws(() => decode(longer), DecodeError);
  });
}

test('a length prefix beyond the frame is rejected before allocating', () => {
  // Updates with a claimed 2^63 items, and Rejected with a 2^40-byte reason.
  const updates = Uint8Array.from(Buffer.from('01000000' + '0000000000000080', 'hex'));
  assert.throws(() => decodeServerMsg(updates), /exceeds the frame/);
  const rejected = Uint8Array.from(Buffer.from('02000000' + '0700000000000000' + '0000000000010000' + '41', 'hex'));
  assert.throws(() => decodeServerMsg(rejected), /exceeds the frame/);
  // Pixels claiming 2 points with only 15 bytes of point data left.
  const pixels = Uint8Array.from(
    Buffer.from('00000000' + '0000000000000000' + '00000000' + '01020304' + '0200000000000000' + '00'.repeat(15), 'hex'),
  );
  assert.throws(() => decodeClientMsg(pixels), /exceeds the frame/);
});

test('unknown variants and invalid UTF-8 are rejected', () => {
  assert.throws(() => decodeServerMsg(Uint8Array.from([9, 0, 0, 0, 0, 0, 0, 0])), /unknown ServerMsg variant 9/);
  assert.throws(() => decodeClientMsg(Uint8Array.from([2, 0, 0, 0])), /unknown ClientMsg variant 2/);
  const op5 = Uint8Array.from(Buffer.from('00000000' + '0100000000000000' + '05000000' + '00000000', 'hex'));
  assert.throws(() => decodeClientMsg(op5), /unknown Op variant 5/);
  const badUtf8 = Uint8Array.from(Buffer.from('03000000' + '9001' + '0100000000000000' + 'ff', 'hex'));
  assert.throws(() => decodeServerMsg(badUtf8), /not UTF-8/);
});

test('the extension variants 7 (Durable) and 8 (Session) have the layout of PROTOCOL.md §10, §11', () => {
  // The bytes the Rust codec gives (protocol/src/codec.rs, extension_variants_are_appended).
  const durable = Uint8Array.from([7, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0]);
  assert.deepStrictEqual(decodeServerMsg(durable), { Durable: { seq: 0x0102n } });
  assert.deepStrictEqual(encodeServerMsg({ Durable: { seq: 0x0102n } }), durable);
  const session = Uint8Array.from(Buffer.from('08000000' + '0500000000000000' + '0900000000000000', 'hex'));
  assert.deepStrictEqual(decodeServerMsg(session), { Session: { session: 5n, last_client_seq: 9n } });
  assert.deepStrictEqual(encodeServerMsg({ Session: { session: 5n, last_client_seq: 9n } }), session);
  const big = { Session: { session: (1n << 64n) - 1n, last_client_seq: 1n << 40n } };
  assert.deepStrictEqual(decodeServerMsg(encodeServerMsg(big)), big);
  // Bytes left over, or too few, are undecodable.
  assert.throws(() => decodeServerMsg(Uint8Array.from([...durable, 0])), DecodeError);
  assert.throws(() => decodeServerMsg(session.subarray(0, 19)), DecodeError);
  // WelcomeLz4 (6) decodes too (the page never asks for it), with Welcome's layout.
  const lz4 = {
    WelcomeLz4: { client_id: 3n, width: 2, height: 1, snapshot_seq: 4n, snapshot_lz4: Uint8Array.from([1, 2]), pending: [] },
  };
  assert.deepStrictEqual(decodeServerMsg(encodeServerMsg(lz4)), lz4);
});

test('the encoder refuses values its field cannot hold', () => {
  const draw = (op) => encodeClientMsg({ Draw: { client_seq: 1n, op } });
  assert.throws(() => draw({ Clear: { color: [256, 0, 0, 0] } }), RangeError);
  assert.throws(() => draw({ Rect: { x: 2 ** 31, y: 0, w: 1, h: 1, color: [0, 0, 0, 0] } }), RangeError);
  assert.throws(() => draw({ Stroke: { color: [0, 0, 0, 0], width: 65536, points: [[0, 0]] } }), RangeError);
  assert.throws(() => encodeClientMsg({ Ping: { nonce: -1n } }), RangeError);
  assert.throws(() => encodeClientMsg({ Ping: { nonce: 1n << 64n } }), RangeError);
  // Numbers are accepted for u64 fields and encode like the BigInt.
  assert.deepStrictEqual(encodeClientMsg({ Ping: { nonce: 5 } }), encodeClientMsg({ Ping: { nonce: 5n } }));
});

test('lineClipped with an unbounded clip plots exactly the §4 loop', () => {
  const wide = { x0: -(2 ** 40), y0: -(2 ** 40), x1: 2 ** 40, y1: 2 ** 40 };
  const ends = [[0, 0], [5, 2], [-3, 7], [2, -5], [-7, -7], [6, 6], [1, 0], [-9, 4], [0, -8]];
  for (let ax = -6; ax <= 6; ax++) {
    for (let ay = -6; ay <= 6; ay++) {
      for (const b of ends) {
        const got = [];
        lineClipped([ax, ay], b, wide, (x, y) => got.push([x, y]));
        assert.deepStrictEqual(got, lineReference([ax, ay], b), `line (${ax},${ay}) -> ${b}`);
      }
    }
  }
});

test('lineClipped plots the clipped part of the §4 loop for far-away and extreme points', () => {
  const clip = { x0: -3, y0: -3, x1: 40, y1: 30 };
  const cases = [
    [[-1000, 7], [1000, 19]],
    [[1000, 19], [-1000, 7]],
    [[-500, -480], [600, 620]],
    [[17, -999], [3, 999]],
    [[-200000, 15], [200000, 16]],
  ];
  for (const [a, b] of cases) {
    const got = [];
    lineClipped(a, b, clip, (x, y) => got.push([x, y]));
    const want = lineReference(a, b).filter(([x, y]) => x >= clip.x0 && x <= clip.x1 && y >= clip.y0 && y <= clip.y1);
    assert.deepStrictEqual(got, want, `line ${a} -> ${b}`);
  }
  // i32 extremes: the walk is bounded by the clip (a reference walk would take 2^32 steps) and
  // the BigInt path keeps the minor coordinate exact.
  const got = [];
  lineClipped([-(2 ** 31), -(2 ** 31)], [2 ** 31 - 1, 2 ** 31 - 1], clip, (x, y) => got.push([x, y]));
  assert.equal(got.length, 34);
  for (const [x, y] of got) assert.ok(Math.abs(x - y) <= 1, `(${x}, ${y})`);
});

test('a stroke between far-away points costs no more than one across the picture', () => {
  const raster = new Raster(64, 64);
  const start = performance.now();
  raster.apply({ Stroke: { color: [0, 0, 0, 128], width: 9, points: [[-1000000, -1000000], [1000000, 1000000]] } });
  raster.apply({ Stroke: { color: [0, 0, 0, 128], width: 9, points: [[-(2 ** 31), 5], [2 ** 31 - 1, 5]] } });
  assert.ok(performance.now() - start < 500);
  // The diagonal crosses the picture: (0,0) and (63,63) are covered once.
  assert.deepStrictEqual([...raster.pixels.subarray(0, 4)], [127, 127, 127, 255]);
});

// ---- PNG -----------------------------------------------------------------------------------

test('png: every filter type unfilters exactly, IDAT split over chunks, tEXt seq read', async () => {
  const [width, height] = [23, 17];
  const pixels = testPixels(width, height);
  for (const filter of [0, 1, 2, 3, 4]) {
    const png = makePng(pixels, width, height, { filterOf: () => filter });
    const got = await decodePng(png);
    assert.equal(got.width, width);
    assert.equal(got.height, height);
    assert.equal(got.seq, null);
    assert.deepStrictEqual(got.pixels, pixels, `filter ${filter}`);
  }
  const mixed = makePng(pixels, width, height, { idatParts: 5, seq: '18446744073709551615' });
  const got = await decodePng(mixed);
  assert.deepStrictEqual(got.pixels, pixels);
  assert.equal(got.seq, 18446744073709551615n);
});

test('png: node zlib output at the page size decodes exactly', async () => {
  const [width, height] = [300, 200];
  const pixels = testPixels(width, height);
  const got = await decodePng(makePng(pixels, width, height, { filterOf: (y) => (y * 3) % 5, idatParts: 7 }));
  assert.deepStrictEqual(got.pixels, pixels);
});

test('png: what the decoder refuses', async () => {
  const pixels = testPixels(4, 3);
  await assert.rejects(decodePng(Uint8Array.from([1, 2, 3])), PngError);
  await assert.rejects(decodePng(makePng(pixels, 4, 3, { ihdr: { interlace: 1 } })), /interlace/);
  await assert.rejects(decodePng(makePng(pixels, 4, 3, { ihdr: { colorType: 2 } })), /only 8-bit RGBA/);
  await assert.rejects(decodePng(makePng(pixels, 4, 3), { maxSide: 3 }), /outside 1..=3/);
  // A header claiming fewer rows than the data holds: the inflated data is too long.
  const png = Buffer.from(makePng(pixels, 4, 3));
  png.writeUInt32BE(2, 16 + 4);
  await assert.rejects(decodePng(Uint8Array.from(png)), /longer than the header/);
  // Truncated in the middle of the image data.
  const whole = makePng(pixels, 4, 3);
  await assert.rejects(decodePng(whole.subarray(0, whole.length - 20)), PngError);
  // An unknown filter byte.
  await assert.rejects(decodePng(makePng(pixels, 4, 3, { filterOf: (y) => (y === 2 ? 5 : 0) })), /filter type 5/);
});
