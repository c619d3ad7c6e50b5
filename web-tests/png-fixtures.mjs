// PNG files made with node's zlib, independent of protocol.js: every row filter type, the
// image data split over several IDAT chunks, an optional tEXt seq, and header fields to break.

import zlib from 'node:zlib';

function crc32(bytes) {
  return zlib.crc32(bytes) >>> 0;
}

function chunk(type, data) {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, 'latin1');
  Buffer.from(data).copy(out, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
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

/** Filters each row with `filterOf(y)` (forward PNG filters, 4 bytes per pixel). */
function filterRows(pixels, width, height, filterOf) {
  const stride = width * 4;
  const out = Buffer.alloc(height * (stride + 1));
  for (let y = 0; y < height; y++) {
    const f = filterOf(y);
    out[y * (stride + 1)] = f;
    for (let i = 0; i < stride; i++) {
      const x = pixels[y * stride + i];
      const a = i >= 4 ? pixels[y * stride + i - 4] : 0;
      const b = y > 0 ? pixels[(y - 1) * stride + i] : 0;
      const c = y > 0 && i >= 4 ? pixels[(y - 1) * stride + i - 4] : 0;
      const pred = [0, a, b, (a + b) >> 1, paeth(a, b, c)][f];
      out[y * (stride + 1) + 1 + i] = (x - pred) & 0xff;
    }
  }
  return out;
}

/** An RGBA8 PNG, its zlib stream split over `idatParts` IDAT chunks, with an optional tEXt seq. */
export function makePng(pixels, width, height, { filterOf = (y) => y % 5, idatParts = 1, seq = null, ihdr = {} } = {}) {
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header[8] = ihdr.depth ?? 8;
  header[9] = ihdr.colorType ?? 6;
  header[12] = ihdr.interlace ?? 0;
  const z = zlib.deflateSync(filterRows(pixels, width, height, filterOf));
  const parts = [Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', header)];
  if (seq !== null) parts.push(chunk('tEXt', Buffer.from(`seq\0${seq}`, 'latin1')));
  const size = Math.ceil(z.length / idatParts);
  for (let at = 0; at < z.length; at += size) parts.push(chunk('IDAT', z.subarray(at, at + size)));
  parts.push(chunk('IEND', Buffer.alloc(0)));
  return Uint8Array.from(Buffer.concat(parts));
}

/** Deterministic pixels with translucent and transparent values and sharp edges. */
export function testPixels(width, height) {
  const px = new Uint8Array(width * height * 4);
  let s = 12345;
  for (let i = 0; i < px.length; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    px[i] = i % 7 === 0 ? 255 : (s >>> 16) & 0xff;
  }
  return px;
}
