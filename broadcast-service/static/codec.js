// The bincode codec of PROTOCOL.md §2: the browser's port of the `protocol` crate's `codec`
// and `wire` modules. Plain ES module with no I/O and no DOM (it runs in the page and in node's
// test runner).
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

export const U64_MAX = (1n << 64n) - 1n;
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

/** A frame or file as bytes: a `Uint8Array` as is, an `ArrayBuffer` viewed. */
export function toBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  throw new TypeError('frame must be a Uint8Array or an ArrayBuffer');
}
