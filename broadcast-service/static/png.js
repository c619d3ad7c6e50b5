// An exact PNG decoder (the `protocol` crate's `snapshot` module reads what the service writes):
// the page decodes snapshots with it, never through a canvas.

import { toBytes, U64_MAX } from './codec.js';

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
