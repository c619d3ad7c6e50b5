// The rasterizer of PROTOCOL.md §4: the browser's port of the `protocol` crate's `raster`
// module. Every party must produce identical pixels; web-tests/vectors.test.mjs checks this
// file against the shared vectors.

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
