// gesture.js: a translucent pen gesture sent as Pixels pieces must draw exactly what one Stroke
// through all the gesture's points draws (PROTOCOL.md §4), each pixel blended once. Random
// gestures from a fixed seed, cut into pieces the way the page cuts them (each piece starts at
// the previous piece's last point), compared bitmap for bitmap and byte for byte with one Stroke.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { CoverageGesture, MAX_PIXELS_POINTS } from '../broadcast-service/static/gesture.js';
import { Raster, strokeCoverage } from '../broadcast-service/static/protocol.js';

/** mulberry32: a small seeded generator, so that a failure can be replayed. */
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const int = (rand, lo, hi) => lo + Math.floor(rand() * (hi - lo + 1));

/**
 * A pointer path: consecutive points distinct (the page drops a repeated point), some of them
 * outside the picture, some steps long and some of one pixel.
 */
function randomGesture(rand, w, h) {
  const n = int(rand, 1, 40);
  const points = [[int(rand, -10, w + 10), int(rand, -10, h + 10)]];
  while (points.length < n) {
    const [x, y] = points[points.length - 1];
    const far = rand() < 0.3;
    const p = far
      ? [int(rand, -20, w + 20), int(rand, -20, h + 20)]
      : [x + int(rand, -3, 3), y + int(rand, -3, 3)];
    if (p[0] !== x || p[1] !== y) points.push(p);
  }
  return points;
}

/** Cuts the points into pieces as app.js does: each piece starts at the previous one's last. */
function pieces(rand, points) {
  if (points.length === 1) return [points];
  const out = [];
  let start = 0;
  while (start < points.length - 1) {
    const end = Math.min(points.length - 1, start + int(rand, 1, 16));
    out.push(points.slice(start, end + 1));
    start = end;
  }
  // Sometimes the first piece is the pointer-down dot alone (a press held still, then a move).
  if (rand() < 0.3) out.unshift([points[0]]);
  return out;
}

/** The coverage of one Stroke over the whole picture. */
function wholeCoverage(w, h, width, points) {
  return strokeCoverage(width, points, { x0: 0, y0: 0, x1: w - 1, y1: h - 1 });
}

/** A picture of random translucent pixels, where a double blend would show. */
function randomPicture(rand, w, h) {
  const px = new Uint8Array(w * h * 4);
  for (let i = 0; i < px.length; i++) px[i] = int(rand, 0, 255);
  return px;
}

function firstDifference(a, b) {
  const i = a.findIndex((v, k) => v !== b[k]);
  return i < 0 ? null : i;
}

test('pieces of random translucent gestures cover exactly one Stroke through all their points', () => {
  const rand = rng(0x5eed);
  let multiPiece = 0;
  for (let round = 0; round < 400; round++) {
    const w = int(rand, 1, 60);
    const h = int(rand, 1, 60);
    const width = int(rand, 1, 24);
    const color = [int(rand, 0, 255), int(rand, 0, 255), int(rand, 0, 255), int(rand, 1, 254)];
    const points = randomGesture(rand, w, h);
    const cut = pieces(rand, points);
    if (cut.length > 1) multiPiece++;
    const gesture = new CoverageGesture(w, h, color, width);
    // How many pieces' Pixels ops list each pixel: must be 0 or 1.
    const times = new Uint8Array(w * h);
    const ops = [];
    for (const piece of cut) {
      for (const op of gesture.take(piece)) {
        assert.deepStrictEqual(Object.keys(op), ['Pixels']);
        assert.deepStrictEqual(op.Pixels.color, color);
        assert.ok(op.Pixels.points.length >= 1 && op.Pixels.points.length <= MAX_PIXELS_POINTS);
        for (const [x, y] of op.Pixels.points) {
          assert.ok(x >= 0 && y >= 0 && x < w && y < h, `(${x}, ${y}) outside ${w}x${h}`);
          times[y * w + x] += 1;
        }
        ops.push(op);
      }
    }
    const want = wholeCoverage(w, h, width, points);
    const at = firstDifference(times, want);
    assert.equal(at, null, `round ${round}: pixel ${at} listed ${times[at]} times, one Stroke covers it ${want[at]} times`);
    assert.deepStrictEqual(gesture.covered, want, `round ${round}: the gesture's covered set`);

    // The same pixels, blended once each: the RGBA of one Stroke, byte for byte.
    const start = randomPicture(rand, w, h);
    const viaPieces = new Raster(w, h, start.slice());
    for (const op of ops) viaPieces.apply(op);
    const viaStroke = new Raster(w, h, start.slice());
    viaStroke.apply({ Stroke: { color, width, points } });
    assert.equal(firstDifference(viaPieces.pixels, viaStroke.pixels), null, `round ${round}: RGBA`);
  }
  assert.ok(multiPiece > 300, `${multiPiece} gestures of several pieces`);
});

test('the same gestures sent as Stroke pieces blend the joints twice (what the Pixels pieces avoid)', () => {
  const w = 40;
  const h = 20;
  const color = [16, 64, 224, 100];
  const points = [[2, 10], [12, 8], [22, 12], [37, 9]];
  const start = new Uint8Array(w * h * 4).fill(255);
  const strokePieces = new Raster(w, h, start.slice());
  for (let i = 0; i + 1 < points.length; i++) strokePieces.apply({ Stroke: { color, width: 9, points: points.slice(i, i + 2) } });
  const oneStroke = new Raster(w, h, start.slice());
  oneStroke.apply({ Stroke: { color, width: 9, points } });
  const gesture = new CoverageGesture(w, h, color, 9);
  const pixelPieces = new Raster(w, h, start.slice());
  for (let i = 0; i + 1 < points.length; i++) for (const op of gesture.take(points.slice(i, i + 2))) pixelPieces.apply(op);
  // A joint: covered by both neighbouring Stroke pieces, darker there than one Stroke.
  const joint = (8 * w + 12) * 4;
  assert.notDeepStrictEqual([...strokePieces.pixels.subarray(joint, joint + 4)], [...oneStroke.pixels.subarray(joint, joint + 4)]);
  assert.deepStrictEqual(pixelPieces.pixels, oneStroke.pixels);
});

test('a piece of more than the Pixels limit is split into ops within it, still exact', () => {
  const rand = rng(7);
  for (const [w, h, width, maxPoints, points] of [
    // A wide stroke across a big picture: more than 65,536 new pixels in one piece.
    [600, 400, 256, MAX_PIXELS_POINTS, [[0, 200], [599, 200]]],
    // A small limit, so that every piece is split, several of them unevenly.
    [50, 40, 9, 7, [[3, 5], [45, 30], [10, 35], [12, 33], [40, 4]]],
  ]) {
    const color = [200, 30, 90, 77];
    const gesture = new CoverageGesture(w, h, color, width, { maxPoints });
    const ops = [];
    for (const piece of pieces(rand, points)) ops.push(...gesture.take(piece));
    assert.ok(ops.length > 1, `${ops.length} ops`);
    for (const op of ops) assert.ok(op.Pixels.points.length >= 1 && op.Pixels.points.length <= maxPoints);
    const total = ops.reduce((n, op) => n + op.Pixels.points.length, 0);
    const want = wholeCoverage(w, h, width, points);
    assert.equal(total, want.reduce((n, v) => n + v, 0));
    const start = randomPicture(rand, w, h);
    const viaPieces = new Raster(w, h, start.slice());
    for (const op of ops) viaPieces.apply(op);
    const viaStroke = new Raster(w, h, start.slice());
    viaStroke.apply({ Stroke: { color, width, points } });
    assert.equal(firstDifference(viaPieces.pixels, viaStroke.pixels), null);
  }
});

test('the preview of a piece shows exactly the pixels the piece will send, and takes none', () => {
  const rand = rng(11);
  for (let round = 0; round < 100; round++) {
    const w = int(rand, 1, 50);
    const h = int(rand, 1, 50);
    const width = int(rand, 1, 16);
    const gesture = new CoverageGesture(w, h, [1, 2, 3, 128], width);
    for (const piece of pieces(rand, randomGesture(rand, w, h))) {
      const covered = gesture.covered.slice();
      const preview = gesture.preview(piece);
      assert.deepStrictEqual(gesture.covered, covered, 'preview marks nothing');
      const sent = gesture.take(piece).flatMap((op) => op.Pixels.points);
      assert.deepStrictEqual(preview === null ? [] : preview.Pixels.points, sent);
    }
  }
});

test('a piece entirely outside the picture or already covered sends nothing', () => {
  const gesture = new CoverageGesture(10, 10, [0, 0, 0, 50], 3);
  assert.deepStrictEqual(gesture.take([[-50, -50], [-20, -40]]), []);
  assert.equal(gesture.preview([[-50, -50], [-20, -40]]), null);
  assert.equal(gesture.take([[2, 2], [6, 6]]).length, 1);
  // Back over the same spine: nothing new.
  assert.deepStrictEqual(gesture.take([[6, 6], [2, 2]]), []);
});

test('strokeCoverage of part of the picture is that part of the whole coverage', () => {
  const rand = rng(3);
  for (let round = 0; round < 300; round++) {
    const w = int(rand, 1, 40);
    const h = int(rand, 1, 40);
    const width = int(rand, 1, 30);
    const points = randomGesture(rand, w, h);
    const whole = wholeCoverage(w, h, width, points);
    const x0 = int(rand, 0, w - 1);
    const y0 = int(rand, 0, h - 1);
    const box = { x0, y0, x1: int(rand, x0, w - 1), y1: int(rand, y0, h - 1) };
    const part = strokeCoverage(width, points, box);
    const bw = box.x1 - box.x0 + 1;
    for (let y = box.y0; y <= box.y1; y++) {
      for (let x = box.x0; x <= box.x1; x++) {
        assert.equal(part[(y - box.y0) * bw + x - box.x0], whole[y * w + x], `round ${round}: (${x}, ${y})`);
      }
    }
  }
});
