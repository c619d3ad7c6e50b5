// A translucent pen gesture sent as Pixels ops that blend every pixel exactly once.
//
// The pen sends a long stroke in pieces while the pointer moves, each piece starting at the
// previous piece's last point. PROTOCOL.md §4 blends each op on its own, so with Stroke pieces
// the pixels near a joint would be blended twice (darker beads along a translucent line). Here
// each piece is instead the pixels its Stroke would cover minus those the gesture has already
// covered: the pieces never overlap, and their union is exactly the coverage of one Stroke
// through all the gesture's points (the spine of that Stroke is the union of the pieces'
// spines, since consecutive pieces share their joint point). Plain ES module without DOM, so
// node's tests drive it directly.

import { opBounds, strokeCoverage } from './raster.js';

/** Most points in one Pixels op (PROTOCOL.md §5 default). */
export const MAX_PIXELS_POINTS = 65_536;

export class CoverageGesture {
  /**
   * `width` × `height`: the picture; `color`, `strokeWidth`: the pen, fixed for the gesture
   * (one Stroke has one colour and width).
   */
  constructor(width, height, color, strokeWidth, { maxPoints = MAX_PIXELS_POINTS } = {}) {
    this.width = width;
    this.height = height;
    this.color = color;
    this.strokeWidth = strokeWidth;
    // Pixels Ops are split at this many points, so that none breaks the server's limit.
    this.maxPoints = maxPoints;
    // Pixels of the picture the gesture's pieces have covered so far (1 = covered): a new
    // piece leaves them out, so that each is blended once per gesture.
    this.covered = new Uint8Array(width * height);
  }

  /**
   * The pixels of `Stroke { points }` inside the picture that no piece has covered yet, in
   * row-major order; `mark` records them as covered.
   */
  newPixels(points, mark) {
    const box = opBounds({ Stroke: { width: this.strokeWidth, points } }, this.width, this.height);
    if (box === null) return [];
    const bitmap = strokeCoverage(this.strokeWidth, points, box);
    const bw = box.x1 - box.x0 + 1;
    const out = [];
    for (let y = box.y0; y <= box.y1; y++) {
      const row = (y - box.y0) * bw - box.x0;
      const at = y * this.width;
      for (let x = box.x0; x <= box.x1; x++) {
        if (bitmap[row + x] === 0 || this.covered[at + x] !== 0) continue;
        if (mark) this.covered[at + x] = 1;
        out.push([x, y]);
      }
    }
    return out;
  }

  /**
   * The next piece: the ops to send for the stroke through `points` (its first point being the
   * previous piece's last), at most `maxPoints` points each, none for a piece that adds no pixel.
   * Its pixels count as covered from now on.
   */
  take(points) {
    const pixels = this.newPixels(points, true);
    const ops = [];
    for (let i = 0; i < pixels.length; i += this.maxPoints) {
      ops.push({ Pixels: { color: this.color, points: pixels.slice(i, i + this.maxPoints) } });
    }
    return ops;
  }

  /**
   * What `take(points)` would draw, as one op (a preview is never sent, so it needs no split),
   * without marking anything; null when it would draw nothing.
   */
  preview(points) {
    const pixels = this.newPixels(points, false);
    return pixels.length ? { Pixels: { color: this.color, points: pixels } } : null;
  }
}
