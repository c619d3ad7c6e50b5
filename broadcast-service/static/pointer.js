// The drawing page's gestures: pointer input (draw, pan, pick) turned into ops, sent in pieces
// while the pointer moves (gesture.js makes a translucent pen's pieces never overlap). Methods
// of the page (app.js's `Page`), which holds the state they use.

import { CoverageGesture } from './gesture.js';
import { lineReference } from './raster.js';
import { $, SETTINGS } from './settings.js';

export const pointerMethods = {
  // ---- pointer ------------------------------------------------------------------------------

  bindPointer() {
    const vp = this.viewport;
    vp.addEventListener('contextmenu', (e) => e.preventDefault());
    vp.addEventListener(
      'wheel',
      (e) => {
        e.preventDefault();
        const r = vp.getBoundingClientRect();
        // Proportional to the distance scrolled: one mouse-wheel notch (100 px) is about one
        // zoom step, and a trackpad's many small deltas zoom smoothly instead of jumping.
        const pixels = e.deltaMode === 1 ? e.deltaY * 33 : e.deltaMode === 2 ? e.deltaY * 400 : e.deltaY;
        const factor = SETTINGS.zoomStep ** (-Math.max(-300, Math.min(300, pixels)) / 100);
        this.zoomAt(factor, e.clientX - r.left, e.clientY - r.top);
      },
      { passive: false },
    );
    vp.addEventListener('pointerdown', (e) => this.pointerDown(e));
    vp.addEventListener('pointermove', (e) => this.pointerMove(e));
    vp.addEventListener('pointerup', (e) => this.pointerUp(e));
    vp.addEventListener('pointercancel', () => this.endGesture(false));
  },

  pointerDown(e) {
    if (this.gesture || this.panning || !this.client.raster) return;
    const panButton = e.button === 1 || e.button === 2;
    if (panButton || this.spaceHeld || this.tool === 'pan') {
      this.panning = { x: e.clientX, y: e.clientY, panX: this.view.panX, panY: this.view.panY };
      this.viewport.dataset.panning = 'active';
      this.viewport.setPointerCapture(e.pointerId);
      return;
    }
    if (e.button !== 0) return;
    if (this.history.drawingPaused) {
      this.toast('Showing the history: move the slider to "live" to draw.', 'error');
      return;
    }
    const p = this.pictureAt(e);
    const tool = e.altKey ? 'picker' : this.tool;
    if (tool === 'picker') {
      this.pick(p);
      this.gesture = { tool, pointerId: e.pointerId };
      this.viewport.setPointerCapture(e.pointerId);
      return;
    }
    if (this.client.state !== 'connected') {
      this.toast('Not connected: drawing resumes when the connection is back.', 'error');
      return;
    }
    this.viewport.setPointerCapture(e.pointerId);
    // The brush is fixed for the whole gesture: one Stroke has one colour and width.
    const color = tool === 'eraser' ? [255, 255, 255, 255] : this.color();
    const width = Number($('width').value);
    const isStroke = tool === 'pen' || tool === 'eraser';
    const { width: pictureWidth, height: pictureHeight } = this.client.raster;
    this.gesture = {
      tool,
      isStroke,
      color,
      width,
      // Every point of a stroke gesture: the spine it stands for.
      points: [p],
      // Pixels already covered by a translucent pen's pieces; null for any other tool.
      coverage:
        tool === 'pen' && color[3] < 255 ? new CoverageGesture(pictureWidth, pictureHeight, color, width) : null,
      pointerId: e.pointerId,
      start: p,
      last: p,
      // Points not sent yet; for strokes it starts with the joint shared with the last piece.
      unsent: [p],
      // New points since the last piece (the joint is not new).
      fresh: 1,
      sentAny: false,
      lastFlush: performance.now(),
      // Pixels of the current piece, for the set semantics of a Pixels op.
      seen: new Set([`${p[0]},${p[1]}`]),
    };
    if (isStroke) this.lastStroke = { tool, color, width, points: this.gesture.points };
    this.updateDraft();
  },

  pointerMove(e) {
    if (this.panning) {
      this.view.panX = this.panning.panX + e.clientX - this.panning.x;
      this.view.panY = this.panning.panY + e.clientY - this.panning.y;
      this.applyView();
      return;
    }
    const p = this.client.raster ? this.pictureAt(e) : null;
    if (p) $('cursor').textContent = `${p[0]}, ${p[1]}`;
    const g = this.gesture;
    if (!g || e.pointerId !== g.pointerId) return;
    if (g.tool === 'picker') {
      this.pick(p);
      return;
    }
    // Coalesced events keep fast strokes smooth where the browser batches pointer moves.
    const events = typeof e.getCoalescedEvents === 'function' ? e.getCoalescedEvents() : [];
    for (const ev of events.length ? events : [e]) this.addPoint(this.pictureAt(ev));
    this.maybeFlush(false);
    this.updateDraft();
  },

  pointerUp(e) {
    if (this.panning) {
      this.panning = null;
      this.viewport.dataset.panning = this.spaceHeld ? 'ready' : '';
      return;
    }
    const g = this.gesture;
    if (!g || e.pointerId !== g.pointerId) return;
    this.endGesture(true);
  },

  addPoint(p) {
    const g = this.gesture;
    if (p[0] === g.last[0] && p[1] === g.last[1]) return;
    if (g.tool === 'rect') {
      g.last = p;
      return;
    }
    if (g.tool === 'pixel') {
      // Pixels along the way, so that a fast drag leaves no holes; only those in the picture.
      const { width, height } = this.client.raster;
      for (const q of lineReference(g.last, p).slice(1)) {
        const key = `${q[0]},${q[1]}`;
        if (g.seen.has(key) || q[0] < 0 || q[1] < 0 || q[0] >= width || q[1] >= height) continue;
        g.seen.add(key);
        g.unsent.push(q);
        g.fresh += 1;
      }
    } else {
      g.unsent.push(p);
      g.points.push(p);
      g.fresh += 1;
    }
    g.last = p;
  },

  /**
   * The op for the gesture's unsent points, or null; `preview` for the draft, which must show
   * the same pixels the piece will draw without taking them. A translucent pen's pieces are
   * taken from its coverage in maybeFlush, so that a piece's pixels are marked only once sent.
   */
  gestureOp(g, preview = false) {
    const { color, width } = g;
    switch (g.tool) {
      case 'pen':
      case 'eraser':
        if (g.coverage !== null) return preview ? g.coverage.preview(g.unsent) : null;
        return { Stroke: { color, width, points: g.unsent } };
      case 'pixel':
        return g.unsent.length ? { Pixels: { color, points: g.unsent } } : null;
      case 'rect': {
        const [x0, y0] = g.start;
        const [x1, y1] = g.last;
        const x = Math.min(x0, x1);
        const y = Math.min(y0, y1);
        return { Rect: { x, y, w: Math.abs(x1 - x0) + 1, h: Math.abs(y1 - y0) + 1, color } };
      }
      default:
        return null;
    }
  },

  /** Sends the next piece of a stroke or pixel run when it is due (or `force`d). */
  maybeFlush(force) {
    const g = this.gesture;
    if (g.tool === 'rect') return;
    const due =
      g.fresh >= SETTINGS.pieceMaxPoints || (g.fresh > 0 && performance.now() - g.lastFlush >= SETTINGS.pieceEveryMs);
    // A stroke piece needs a new point beyond the joint, except a single click's dot.
    const worthSending = g.isStroke ? g.fresh > 1 || (g.fresh === 1 && (!g.sentAny || g.unsent.length > 1)) : g.fresh > 0;
    if (!(force || due) || !worthSending) return;
    let ops;
    if (g.coverage !== null) {
      // None when every pixel of the piece is covered already (or outside the picture).
      ops = g.coverage.take(g.unsent);
    } else {
      const op = this.gestureOp(g);
      if (op === null) return;
      ops = [op];
    }
    for (const op of ops) {
      if (this.client.send(op) === null) {
        this.endGesture(false);
        return;
      }
    }
    g.sentAny = true;
    g.lastFlush = performance.now();
    g.fresh = 0;
    g.unsent = g.isStroke ? [g.last] : [];
    g.seen = new Set();
  },

  updateDraft() {
    const g = this.gesture;
    if (!g || g.tool === 'picker') {
      this.draft = null;
    } else if (g.tool === 'pen' || g.tool === 'eraser') {
      this.draft = g.fresh > 0 ? this.gestureOp(g, true) : null;
    } else {
      this.draft = this.gestureOp(g);
    }
    this.markPreviews();
  },

  /** Ends the gesture: `commit` sends what is left (a rect is sent only here). */
  endGesture(commit) {
    const g = this.gesture;
    if (!g) return;
    if (commit && g.tool !== 'picker') {
      if (g.tool === 'rect') {
        this.client.send(this.gestureOp(g));
      } else {
        this.maybeFlush(true);
      }
    }
    this.gesture = null;
    this.draft = null;
    this.markPreviews();
  },
};
