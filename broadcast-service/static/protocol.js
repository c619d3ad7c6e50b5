// The browser's port of the `protocol` crate: the bincode codec of PROTOCOL.md §2, the
// rasterizer of §4 and an exact PNG decoder. Plain ES module with no I/O and no DOM, so the same
// file runs in the page and in node's test runner (web-tests/vectors.test.mjs checks it against
// the shared vectors).
//
// Values use the JSON form of shared/vectors/README.md, which is serde's external tagging:
// an enum value is an object with one key, the variant name (`{Stroke: {color, width, points}}`),
// `Rgba` is `[r, g, b, a]`, a `Point` is `[x, y]`. Differences: byte strings are `Uint8Array`
// under the plain field name (`rgba`, `snapshot_png`), and every u64 (`seq`, `client_id`,
// `client_seq`, `snapshot_seq`, `nonce`) decodes as a BigInt, because values above 2^53 are
// legal on the wire and a Number would round them. The encoder accepts a Number or a BigInt.

// ---------------------------------------------------------------------------------------------
// Codec (§2)
// ---------------------------------------------------------------------------------------------

/** Thrown for a frame that is not one well-formed message. */
export class DecodeError extends Error {
  constructor(message) {
    super(message);
    this.name = 'DecodeError';
  }
}

const OP_VARIANTS = ['Pixels', 'Rect', 'Stroke', 'Patch', 'Clear'];
const CLIENT_VARIANTS = ['Draw', 'Ping'];
// 6..8 are the opt-in extensions of the project's PROTOCOL.md (§8, §10, §11): a server sends them
// only to a client that asked for them.
const SERVER_VARIANTS = ['Welcome', 'Updates', 'Rejected', 'Error', 'Pong', 'Presence', 'WelcomeLz4', 'Durable', 'Session'];

const U64_MAX = (1n << 64n) - 1n;
const textDecoder = new TextDecoder('utf-8', { fatal: true });
const textEncoder = new TextEncoder();

/** Appends little-endian fixed-width values to a growing buffer. */
class Writer {
  constructor() {
    // Grown by doubling; `len` marks the bytes written so far.
    this.buf = new Uint8Array(64);
    this.view = new DataView(this.buf.buffer);
    this.len = 0;
  }

  reserve(n) {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }

  u8(v) {
    checkInt(v, 0, 0xff, 'u8');
    this.reserve(1);
    this.buf[this.len++] = v;
  }

  u16(v) {
    checkInt(v, 0, 0xffff, 'u16');
    this.reserve(2);
    this.view.setUint16(this.len, v, true);
    this.len += 2;
  }

  u32(v) {
    checkInt(v, 0, 0xffffffff, 'u32');
    this.reserve(4);
    this.view.setUint32(this.len, v, true);
    this.len += 4;
  }

  i32(v) {
    checkInt(v, -0x80000000, 0x7fffffff, 'i32');
    this.reserve(4);
    this.view.setInt32(this.len, v, true);
    this.len += 4;
  }

  u64(v) {
    const b = BigInt(v);
    if (b < 0n || b > U64_MAX) throw new RangeError(`u64 out of range: ${v}`);
    this.reserve(8);
    this.view.setBigUint64(this.len, b, true);
    this.len += 8;
  }

  bytes(v) {
    if (!(v instanceof Uint8Array)) throw new TypeError('byte string must be a Uint8Array');
    this.u64(v.length);
    this.reserve(v.length);
    this.buf.set(v, this.len);
    this.len += v.length;
  }

  string(s) {
    this.bytes(textEncoder.encode(s));
  }

  rgba(c) {
    if (!c || c.length !== 4) throw new TypeError('colour must be [r, g, b, a]');
    for (const v of c) this.u8(v);
  }

  points(ps) {
    this.u64(ps.length);
    for (const p of ps) {
      this.i32(p[0]);
      this.i32(p[1]);
    }
  }

  finish() {
    return this.buf.slice(0, this.len);
  }
}

function checkInt(v, lo, hi, what) {
  if (!Number.isInteger(v) || v < lo || v > hi) throw new RangeError(`${what} out of range: ${v}`);
}

/** Reads little-endian values, never past the end of the frame. */
class Reader {
  constructor(bytes) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = 0;
  }

  need(n) {
    if (n > this.bytes.length - this.pos) {
      throw new DecodeError(`frame ends early: need ${n} bytes at offset ${this.pos}`);
    }
  }

  u8() {
    this.need(1);
    return this.bytes[this.pos++];
  }

  u16() {
    this.need(2);
    const v = this.view.getUint16(this.pos, true);
    this.pos += 2;
    return v;
  }

  u32() {
    this.need(4);
    const v = this.view.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }

  i32() {
    this.need(4);
    const v = this.view.getInt32(this.pos, true);
    this.pos += 4;
    return v;
  }

  u64() {
    this.need(8);
    const v = this.view.getBigUint64(this.pos, true);
    this.pos += 8;
    return v;
  }

  /**
   * A length prefix for items of at least `minItemSize` bytes each, rejected before anything is
   * allocated when the rest of the frame could not hold that many items.
   */
  len(minItemSize) {
    const n = this.u64();
    const left = BigInt(this.bytes.length - this.pos);
    if (n * BigInt(minItemSize) > left) {
      throw new DecodeError(`length ${n} at offset ${this.pos - 8} exceeds the frame`);
    }
    return Number(n);
  }

  bytesField() {
    const n = this.len(1);
    const v = this.bytes.slice(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }

  string() {
    const raw = this.bytesField();
    try {
      return textDecoder.decode(raw);
    } catch {
      throw new DecodeError('string is not UTF-8');
    }
  }

  rgba() {
    this.need(4);
    const c = [this.bytes[this.pos], this.bytes[this.pos + 1], this.bytes[this.pos + 2], this.bytes[this.pos + 3]];
    this.pos += 4;
    return c;
  }

  points() {
    const n = this.len(8);
    const ps = new Array(n);
    for (let i = 0; i < n; i++) ps[i] = [this.i32(), this.i32()];
    return ps;
  }

  variant(names, what) {
    const i = this.u32();
    if (i >= names.length) throw new DecodeError(`unknown ${what} variant ${i}`);
    return names[i];
  }

  end() {
    if (this.pos !== this.bytes.length) {
      throw new DecodeError(`${this.bytes.length - this.pos} bytes left over after the message`);
    }
  }
}

/** The one key of an externally tagged enum value. */
function tag(value, names, what) {
  const keys = value && typeof value === 'object' ? Object.keys(value) : [];
  if (keys.length !== 1 || !names.includes(keys[0])) throw new TypeError(`not a ${what}: ${keys}`);
  return keys[0];
}

function writeOp(w, op) {
  const name = tag(op, OP_VARIANTS, 'Op');
  const v = op[name];
  w.u32(OP_VARIANTS.indexOf(name));
  switch (name) {
    case 'Pixels':
      w.rgba(v.color);
      w.points(v.points);
      break;
    case 'Rect':
      w.i32(v.x);
      w.i32(v.y);
      w.u32(v.w);
      w.u32(v.h);
      w.rgba(v.color);
      break;
    case 'Stroke':
      w.rgba(v.color);
      w.u16(v.width);
      w.points(v.points);
      break;
    case 'Patch':
      w.i32(v.x);
      w.i32(v.y);
      w.u32(v.w);
      w.u32(v.h);
      w.bytes(v.rgba);
      break;
    case 'Clear':
      w.rgba(v.color);
      break;
  }
}

function readOp(r) {
  const name = r.variant(OP_VARIANTS, 'Op');
  switch (name) {
    case 'Pixels':
      return { Pixels: { color: r.rgba(), points: r.points() } };
    case 'Rect':
      return { Rect: { x: r.i32(), y: r.i32(), w: r.u32(), h: r.u32(), color: r.rgba() } };
    case 'Stroke':
      return { Stroke: { color: r.rgba(), width: r.u16(), points: r.points() } };
    case 'Patch':
      return { Patch: { x: r.i32(), y: r.i32(), w: r.u32(), h: r.u32(), rgba: r.bytesField() } };
    default:
      return { Clear: { color: r.rgba() } };
  }
}

function writeSequenced(w, s) {
  w.u64(s.seq);
  w.u64(s.client_id);
  w.u64(s.client_seq);
  writeOp(w, s.op);
}

// The smallest encoded Sequenced: three u64, an Op tag and a Clear colour.
const MIN_SEQUENCED_SIZE = 8 * 3 + 4 + 4;

function readSequencedList(r) {
  const n = r.len(MIN_SEQUENCED_SIZE);
  const out = new Array(n);
  for (let i = 0; i < n; i++) {
    out[i] = { seq: r.u64(), client_id: r.u64(), client_seq: r.u64(), op: readOp(r) };
  }
  return out;
}

/** Encodes a `ClientMsg` as one binary frame. */
export function encodeClientMsg(msg) {
  const name = tag(msg, CLIENT_VARIANTS, 'ClientMsg');
  const v = msg[name];
  const w = new Writer();
  w.u32(CLIENT_VARIANTS.indexOf(name));
  if (name === 'Draw') {
    w.u64(v.client_seq);
    writeOp(w, v.op);
  } else {
    w.u64(v.nonce);
  }
  return w.finish();
}

/** Decodes one binary frame as a `ClientMsg`; throws `DecodeError`. */
export function decodeClientMsg(bytes) {
  const r = new Reader(toBytes(bytes));
  const name = r.variant(CLIENT_VARIANTS, 'ClientMsg');
  const msg = name === 'Draw' ? { Draw: { client_seq: r.u64(), op: readOp(r) } } : { Ping: { nonce: r.u64() } };
  r.end();
  return msg;
}

/** Encodes a `ServerMsg` as one binary frame (used by tests and tools). */
export function encodeServerMsg(msg) {
  const name = tag(msg, SERVER_VARIANTS, 'ServerMsg');
  const v = msg[name];
  const w = new Writer();
  w.u32(SERVER_VARIANTS.indexOf(name));
  switch (name) {
    case 'Welcome':
      w.u64(v.client_id);
      w.u32(v.width);
      w.u32(v.height);
      w.u64(v.snapshot_seq);
      w.bytes(v.snapshot_png);
      w.u64(v.pending.length);
      for (const s of v.pending) writeSequenced(w, s);
      break;
    case 'Updates':
      w.u64(v.length);
      for (const s of v) writeSequenced(w, s);
      break;
    case 'Rejected':
      w.u64(v.client_seq);
      w.string(v.reason);
      break;
    case 'Error':
      w.u16(v.code);
      w.string(v.message);
      break;
    case 'Pong':
      w.u64(v.nonce);
      break;
    case 'Presence':
      w.u32(v.clients);
      break;
    case 'WelcomeLz4':
      w.u64(v.client_id);
      w.u32(v.width);
      w.u32(v.height);
      w.u64(v.snapshot_seq);
      w.bytes(v.snapshot_lz4);
      w.u64(v.pending.length);
      for (const s of v.pending) writeSequenced(w, s);
      break;
    case 'Durable':
      w.u64(v.seq);
      break;
    case 'Session':
      w.u64(v.session);
      w.u64(v.last_client_seq);
      break;
  }
  return w.finish();
}

/** Decodes one binary frame as a `ServerMsg`; throws `DecodeError`. */
export function decodeServerMsg(bytes) {
  const r = new Reader(toBytes(bytes));
  const name = r.variant(SERVER_VARIANTS, 'ServerMsg');
  let msg;
  switch (name) {
    case 'Welcome':
      msg = {
        Welcome: {
          client_id: r.u64(),
          width: r.u32(),
          height: r.u32(),
          snapshot_seq: r.u64(),
          snapshot_png: r.bytesField(),
          pending: readSequencedList(r),
        },
      };
      break;
    case 'Updates':
      msg = { Updates: readSequencedList(r) };
      break;
    case 'Rejected':
      msg = { Rejected: { client_seq: r.u64(), reason: r.string() } };
      break;
    case 'Error':
      msg = { Error: { code: r.u16(), message: r.string() } };
      break;
    case 'Pong':
      msg = { Pong: { nonce: r.u64() } };
      break;
    case 'Presence':
      msg = { Presence: { clients: r.u32() } };
      break;
    case 'WelcomeLz4':
      msg = {
        WelcomeLz4: {
          client_id: r.u64(),
          width: r.u32(),
          height: r.u32(),
          snapshot_seq: r.u64(),
          snapshot_lz4: r.bytesField(),
          pending: readSequencedList(r),
        },
      };
      break;
    case 'Durable':
      msg = { Durable: { seq: r.u64() } };
      break;
    default:
      msg = { Session: { session: r.u64(), last_client_seq: r.u64() } };
  }
  r.end();
  return msg;
}

function toBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  throw new TypeError('frame must be a Uint8Array or an ArrayBuffer');
}

// ---------------------------------------------------------------------------------------------
// Rasterizer (§4)
// ---------------------------------------------------------------------------------------------

/**
 * Blends `src` (r, g, b, a) onto the pixel at byte offset `i` of `px` (§4). Integer arithmetic
 * throughout: every operand stays far below 2^53, so Numbers are exact, and `Math.floor` of a
 * non-negative quotient is integer division.
 */
export function blendAt(px, i, r, g, b, a) {
  if (a === 255) {
    px[i] = r;
    px[i + 1] = g;
    px[i + 2] = b;
    px[i + 3] = 255;
  } else if (a !== 0) {
    const ia = 255 - a;
    px[i] = Math.floor((r * a + px[i] * ia + 127) / 255);
    px[i + 1] = Math.floor((g * a + px[i + 1] * ia + 127) / 255);
    px[i + 2] = Math.floor((b * a + px[i + 2] * ia + 127) / 255);
    px[i + 3] = a + Math.floor((px[i + 3] * ia + 127) / 255);
  }
}

/** The inclusive rectangle `{x0, y0, x1, y1}` an op can change, clipped; null when none. */
export function opBounds(op, width, height) {
  const name = Object.keys(op)[0];
  const v = op[name];
  let box;
  switch (name) {
    case 'Clear':
      box = { x0: 0, y0: 0, x1: width - 1, y1: height - 1 };
      break;
    case 'Rect':
    case 'Patch':
      box = { x0: v.x, y0: v.y, x1: v.x + v.w - 1, y1: v.y + v.h - 1 };
      if (v.w === 0 || v.h === 0) return null;
      break;
    case 'Pixels':
    case 'Stroke': {
      if (v.points.length === 0) return null;
      const reach = name === 'Stroke' ? v.width >> 1 : 0;
      box = { x0: Infinity, y0: Infinity, x1: -Infinity, y1: -Infinity };
      for (const [x, y] of v.points) {
        box.x0 = Math.min(box.x0, x - reach);
        box.y0 = Math.min(box.y0, y - reach);
        box.x1 = Math.max(box.x1, x + reach);
        box.y1 = Math.max(box.y1, y + reach);
      }
      break;
    }
    default:
      return null;
  }
  const out = {
    x0: Math.max(box.x0, 0),
    y0: Math.max(box.y0, 0),
    x1: Math.min(box.x1, width - 1),
    y1: Math.min(box.y1, height - 1),
  };
  return out.x0 <= out.x1 && out.y0 <= out.y1 ? out : null;
}

/** A `width × height` RGBA8 picture, row-major: the page's source of truth. */
export class Raster {
  constructor(width, height, pixels) {
    this.width = width;
    this.height = height;
    if (pixels === undefined) {
      pixels = new Uint8Array(width * height * 4).fill(255);
    } else if (pixels.length !== width * height * 4) {
      throw new RangeError(`expected ${width * height * 4} bytes, got ${pixels.length}`);
    }
    this.pixels = pixels;
  }

  /**
   * Applies one op. Returns the inclusive rectangle it may have changed (for redrawing only
   * that part of the canvas), or null.
   */
  apply(op) {
    const name = Object.keys(op)[0];
    const v = op[name];
    const box = opBounds(op, this.width, this.height);
    if (box === null) return null;
    switch (name) {
      case 'Pixels':
        this.pixelsOp(v.color, v.points);
        break;
      case 'Rect':
        this.rect(box, v.color);
        break;
      case 'Stroke':
        this.stroke(v.color, v.width, v.points, box);
        break;
      case 'Patch':
        if (v.rgba.length !== v.w * v.h * 4) return null;
        this.patch(v, box);
        break;
      case 'Clear':
        this.clear(v.color);
        break;
    }
    return box;
  }

  clear(color) {
    const px = this.pixels;
    if (px.byteOffset % 4 === 0) {
      // One 32-bit store per pixel; the same byte order as the buffer whatever the platform's.
      const word = new Uint32Array(Uint8Array.from(color).buffer)[0];
      new Uint32Array(px.buffer, px.byteOffset, px.length / 4).fill(word);
    } else {
      for (let i = 0; i < px.length; i += 4) px.set(color, i);
    }
  }

  pixelsOp(color, points) {
    const [r, g, b, a] = color;
    // A point listed twice is blended once: the covered set is a set.
    const inside = new Set();
    for (const [x, y] of points) {
      if (x >= 0 && y >= 0 && x < this.width && y < this.height) inside.add(y * this.width + x);
    }
    for (const i of inside) blendAt(this.pixels, i * 4, r, g, b, a);
  }

  rect(box, color) {
    const [r, g, b, a] = color;
    for (let y = box.y0; y <= box.y1; y++) {
      const end = (y * this.width + box.x1) * 4;
      for (let i = (y * this.width + box.x0) * 4; i <= end; i += 4) blendAt(this.pixels, i, r, g, b, a);
    }
  }

  patch(v, box) {
    for (let y = box.y0; y <= box.y1; y++) {
      for (let x = box.x0; x <= box.x1; x++) {
        const s = ((y - v.y) * v.w + (x - v.x)) * 4;
        const src = v.rgba;
        blendAt(this.pixels, (y * this.width + x) * 4, src[s], src[s + 1], src[s + 2], src[s + 3]);
      }
    }
  }

  /** Blends every pixel of `box` that the stroke covers (§4), each once. */
  stroke(color, width, points, box) {
    const covered = strokeCoverage(width, points, box);
    const bw = box.x1 - box.x0 + 1;
    const bh = box.y1 - box.y0 + 1;
    const [r, g, b, a] = color;
    for (let j = 0; j < bh; j++) {
      const row = j * bw;
      for (let i = 0; i < bw; i++) {
        if (covered[row + i]) blendAt(this.pixels, ((box.y0 + j) * this.width + box.x0 + i) * 4, r, g, b, a);
      }
    }
  }
}

/**
 * The pixels of the inclusive rectangle `box` that `Stroke { width, points }` covers (§4), as a
 * bitmap of `box` (row-major, 1 = covered), without blending anything: the page uses it to send
 * a translucent gesture as Pixels ops that never cover a pixel twice. Disc rows are stamped as
 * spans, and the spine is walked only where it can reach `box`.
 */
export function strokeCoverage(width, points, box) {
  const r2 = width * width;
  // Largest |d| along one axis that a spine point can reach: 4*d^2 <= r2.
  const reach = width >> 1;
  // half[dy]: the widest |dx| covered on the row |dy| away from a spine point (-1: none).
  const half = new Int32Array(reach + 1);
  for (let dy = 0; dy <= reach; dy++) {
    let dx = reach;
    while (dx >= 0 && 4 * (dx * dx + dy * dy) > r2) dx--;
    half[dy] = dx;
  }
  const bw = box.x1 - box.x0 + 1;
  const bh = box.y1 - box.y0 + 1;
  const covered = new Uint8Array(bw * bh);
  const fillRow = (py, lo, hi) => {
    if (py < box.y0 || py > box.y1) return;
    const row = (py - box.y0) * bw - box.x0;
    covered.fill(1, row + lo, row + hi + 1);
  };
  const stamp = (cx, cy) => {
    for (let dy = 0; dy <= reach; dy++) {
      const hx = half[dy];
      if (hx < 0) continue;
      const lo = Math.max(cx - hx, box.x0);
      const hi = Math.min(cx + hx, box.x1);
      if (lo > hi) continue;
      fillRow(cy - dy, lo, hi);
      if (dy !== 0) fillRow(cy + dy, lo, hi);
    }
  };
  // Spine points farther than `reach` outside the box cover nothing in it.
  const clip = { x0: box.x0 - reach, y0: box.y0 - reach, x1: box.x1 + reach, y1: box.y1 + reach };
  if (points.length === 1) {
    const [x, y] = points[0];
    if (clipContains(clip, x, y)) stamp(x, y);
  }
  for (let i = 0; i + 1 < points.length; i++) lineClipped(points[i], points[i + 1], clip, stamp);
  return covered;
}

function clipContains(clip, x, y) {
  return x >= clip.x0 && x <= clip.x1 && y >= clip.y0 && y <= clip.y1;
}

/**
 * Plots the points of `line(a, b)` (§4) that lie inside `clip`, without walking the ones
 * outside it (port of `line_clipped` in protocol/src/raster.rs).
 *
 * For a line whose major axis is x (|dx| >= |dy|) the §4 loop plots exactly the points
 * `(x0 + sx*i, y0 + sy*floor((2*|dy|*i + |dx|) / (2*|dx|)))` for `i` in `0..=|dx|`, and
 * symmetrically when y is the major axis; so the walk starts at the first `i` whose major
 * coordinate is inside `clip`. `2*d*i + n` stays below 2^53 while the span is at most 2^25
 * (coordinates within the §5 limits); beyond that the product is computed in BigInt.
 */
export function lineClipped(a, b, clip, plot) {
  const [x0, y0] = a;
  const [x1, y1] = b;
  const sx = x0 < x1 ? 1 : -1;
  const sy = y0 < y1 ? 1 : -1;
  const dx = Math.abs(x1 - x0);
  const dy = Math.abs(y1 - y0);
  if (dx === 0 && dy === 0) {
    if (clipContains(clip, x0, y0)) plot(x0, y0);
    return;
  }
  const xMajor = dx >= dy;
  const [m0, k0, sm, sk, n, d, mlo, mhi] = xMajor
    ? [x0, y0, sx, sy, dx, dy, clip.x0, clip.x1]
    : [y0, x0, sy, sx, dy, dx, clip.y0, clip.y1];
  let ilo = sm > 0 ? mlo - m0 : m0 - mhi;
  let ihi = sm > 0 ? mhi - m0 : m0 - mlo;
  ilo = Math.max(ilo, 0);
  ihi = Math.min(ihi, n);
  const exact = n <= 2 ** 25;
  for (let i = ilo; i <= ihi; i++) {
    const m = m0 + sm * i;
    const step = exact
      ? Math.floor((2 * d * i + n) / (2 * n))
      : Number((2n * BigInt(d) * BigInt(i) + BigInt(n)) / (2n * BigInt(n)));
    const k = k0 + sk * step;
    const x = xMajor ? m : k;
    const y = xMajor ? k : m;
    if (clipContains(clip, x, y)) plot(x, y);
  }
}

/** The §4 `line` loop, literally: the reference the tests compare `lineClipped` with. */
export function lineReference(a, b) {
  let [x0, y0] = a;
  const [x1, y1] = b;
  const dx = Math.abs(x1 - x0);
  const sx = x0 < x1 ? 1 : -1;
  const dy = -Math.abs(y1 - y0);
  const sy = y0 < y1 ? 1 : -1;
  let err = dx + dy;
  const out = [];
  for (;;) {
    out.push([x0, y0]);
    if (x0 === x1 && y0 === y1) break;
    const e2 = 2 * err;
    if (e2 >= dy) {
      err += dy;
      x0 += sx;
    }
    if (e2 <= dx) {
      err += dx;
      y0 += sy;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// PNG (8-bit RGBA, non-interlaced: the only form the service writes, §6)
// ---------------------------------------------------------------------------------------------

/** Thrown for a PNG this decoder does not accept. */
export class PngError extends Error {
  constructor(message) {
    super(message);
    this.name = 'PngError';
  }
}

const PNG_SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

/**
 * Decodes an 8-bit RGBA PNG to `{width, height, pixels, seq}` (`seq`: the BigInt of its `tEXt`
 * chunk `seq`, or null) exactly, byte for byte. The page uses this instead of a canvas, whose
 * premultiplied alpha would change translucent pixels. Sides above `maxSide` are refused before
 * anything of that size is allocated, and the inflated data may not exceed what the header
 * announces.
 */
export async function decodePng(bytes, { maxSide = 16384 } = {}) {
  const png = toBytes(bytes);
  if (png.length < 8 || PNG_SIGNATURE.some((v, i) => png[i] !== v)) throw new PngError('not a PNG');
  const view = new DataView(png.buffer, png.byteOffset, png.byteLength);
  let pos = 8;
  let header = null;
  let seq = null;
  const idat = [];
  let idatLength = 0;
  let ended = false;
  while (!ended) {
    if (png.length - pos < 12) throw new PngError('truncated chunk');
    const length = view.getUint32(pos);
    const type = String.fromCharCode(...png.subarray(pos + 4, pos + 8));
    if (length > png.length - pos - 12) throw new PngError(`chunk ${type} runs past the end`);
    const data = png.subarray(pos + 8, pos + 8 + length);
    pos += 12 + length;
    if (type === 'IHDR') {
      if (length !== 13) throw new PngError('bad IHDR');
      const d = new DataView(data.buffer, data.byteOffset, 13);
      header = {
        width: d.getUint32(0),
        height: d.getUint32(4),
        depth: data[8],
        colorType: data[9],
        compression: data[10],
        filter: data[11],
        interlace: data[12],
      };
      if (header.depth !== 8 || header.colorType !== 6) {
        throw new PngError(`only 8-bit RGBA is accepted (depth ${header.depth}, colour type ${header.colorType})`);
      }
      if (header.compression !== 0 || header.filter !== 0 || header.interlace !== 0) {
        throw new PngError('unsupported compression, filter or interlace method');
      }
      if (header.width < 1 || header.height < 1 || header.width > maxSide || header.height > maxSide) {
        throw new PngError(`size ${header.width}x${header.height} outside 1..=${maxSide}`);
      }
    } else if (type === 'IDAT') {
      idat.push(data);
      idatLength += length;
    } else if (type === 'tEXt') {
      const zero = data.indexOf(0);
      if (zero > 0 && String.fromCharCode(...data.subarray(0, zero)) === 'seq') {
        const text = String.fromCharCode(...data.subarray(zero + 1));
        if (/^[0-9]{1,20}$/.test(text) && BigInt(text) <= U64_MAX) seq = BigInt(text);
      }
    } else if (type === 'IEND') {
      ended = true;
    }
  }
  if (header === null) throw new PngError('no IHDR');
  const { width, height } = header;
  const stride = width * 4;
  const raw = await inflate(concat(idat, idatLength), height * (stride + 1));
  return { width, height, pixels: unfilter(raw, width, height), seq };
}

function concat(parts, length) {
  const out = new Uint8Array(length);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** zlib-inflates `data`, which must produce exactly `expected` bytes. */
async function inflate(data, expected) {
  const stream = new Blob([data]).stream().pipeThrough(new DecompressionStream('deflate'));
  const reader = stream.getReader();
  const out = new Uint8Array(expected);
  let at = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (value.length > expected - at) throw new PngError('image data is longer than the header says');
      out.set(value, at);
      at += value.length;
    }
  } catch (err) {
    reader.cancel().catch(() => {});
    throw err instanceof PngError ? err : new PngError(`image data does not inflate: ${err.message}`);
  }
  if (at !== expected) throw new PngError(`image data is ${at} bytes, expected ${expected}`);
  return out;
}

/** Reverses the five PNG row filters (4 bytes per pixel). */
export function unfilter(raw, width, height) {
  const bpp = 4;
  const stride = width * bpp;
  const out = new Uint8Array(stride * height);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)];
    const src = y * (stride + 1) + 1;
    const row = y * stride;
    const prev = row - stride;
    for (let i = 0; i < stride; i++) {
      const x = raw[src + i];
      const left = i >= bpp ? out[row + i - bpp] : 0;
      const up = y > 0 ? out[prev + i] : 0;
      const upLeft = y > 0 && i >= bpp ? out[prev + i - bpp] : 0;
      let v;
      switch (filter) {
        case 0:
          v = x;
          break;
        case 1:
          v = x + left;
          break;
        case 2:
          v = x + up;
          break;
        case 3:
          v = x + ((left + up) >> 1);
          break;
        case 4:
          v = x + paeth(left, up, upLeft);
          break;
        default:
          throw new PngError(`unknown filter type ${filter} on row ${y}`);
      }
      out[row + i] = v & 0xff;
    }
  }
  return out;
}

function paeth(a, b, c) {
  const p = a + b - c;
  const pa = Math.abs(p - a);
  const pb = Math.abs(p - b);
  const pc = Math.abs(p - c);
  if (pa <= pb && pa <= pc) return a;
  return pb <= pc ? b : c;
}
