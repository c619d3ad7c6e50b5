// The drawing page (/p/{id}): view (zoom, pan), tools, previews and status around a
// PictureClient (client.js), which owns the connection and the picture's RGBA buffer.
//
// Display: the picture canvas only ever shows the buffer (putImageData of the dirty part).
// Previews: the overlay canvas shows what our not-yet-sequenced ops (sent, or still being
// drawn) will do, computed with the same rasterizer on a copy of the affected region; when the
// echo arrives the op is in the buffer and its preview is dropped.
//
// Translucent pen: sent as Pixels pieces that never overlap (gesture.js), so that the gesture
// looks like one Stroke through all its points; opaque pens and the eraser send Stroke pieces,
// whose overlap at the joints changes nothing.
//
// Automation hook: `window.raster = { seq, width, height, rgba(), state, welcomes, presence,
// pending, sent, lastGesture }` (seq: a Number below 2^53, else a BigInt; rgba(): a copy of the
// buffer; lastGesture: {tool, color, width, points} of the latest pen or eraser gesture, the
// points being the spine of the one Stroke it stands for), plus `history` (the history panel's
// {versions, shown, playing, timelapse}) and `versionRgba()` (the shown version's pixels).
//
// History (PROTOCOL.md §15, history.js): a slider shows any stored version over the picture and
// a button plays the timelapse; drawing pauses while either is on screen.

import { PictureClient, randomSession, union } from './client.js';
import { CoverageGesture } from './gesture.js';
import { HistoryPanel } from './history.js';
import { Raster, lineReference, opBounds } from './raster.js';
import { rememberPicture } from './recent.js';

/** Page settings; limits match PROTOCOL.md §5 defaults (the server's word is final). */
const SETTINGS = {
  // A stroke or pixel run is sent in pieces while the pointer moves: after this many ms, or
  // this many new points, whichever comes first. Consecutive pieces share their joint point.
  pieceEveryMs: 30,
  pieceMaxPoints: 16,
  minZoom: 1 / 16,
  maxZoom: 64,
  zoomStep: 1.25,
  // How long a message (a rejected op, a server error) stays visible.
  toastMs: 4000,
};

const ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
const $ = (id) => document.getElementById(id);

function pictureIdFromPath() {
  const segment = location.pathname.replace(/^\/p\//, '').split('/')[0];
  try {
    return decodeURIComponent(segment);
  } catch {
    return '';
  }
}

/** The page's `?token=` (PROTOCOL.md §13), passed on to the WebSocket and snapshot.png. */
function pageToken() {
  return new URLSearchParams(location.search).get('token');
}

/**
 * The claims of a JWT (its middle part, base64url JSON), unverified: only to shape the page
 * (a view-only token hides the drawing tools); the server checks the signature. Null when the
 * token is not readable.
 */
function tokenClaims(token) {
  try {
    const part = token.split('.')[1];
    const base64 = part.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(part.length / 4) * 4, '=');
    const claims = JSON.parse(atob(base64));
    return claims && typeof claims === 'object' ? claims : null;
  } catch {
    return null;
  }
}

function websocketUrl(id) {
  const params = new URLSearchParams(location.search);
  const query = new URLSearchParams();
  for (const key of ['width', 'height', 'token']) if (params.has(key)) query.set(key, params.get(key));
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const q = query.toString();
  return `${scheme}://${location.host}/pictures/${encodeURIComponent(id)}/ws${q ? `?${q}` : ''}`;
}

function hexToRgb(hex) {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

function rgbToHex([r, g, b]) {
  return `#${[r, g, b].map((v) => v.toString(16).padStart(2, '0')).join('')}`;
}

/** Shifts an op by (-dx, -dy): previews are rasterized on a region copied out of the picture. */
function translate(op, dx, dy) {
  const name = Object.keys(op)[0];
  const v = op[name];
  switch (name) {
    case 'Pixels':
    case 'Stroke':
      return { [name]: { ...v, points: v.points.map(([x, y]) => [x - dx, y - dy]) } };
    case 'Rect':
    case 'Patch':
      return { [name]: { ...v, x: v.x - dx, y: v.y - dy } };
    default:
      return op;
  }
}

class Page {
  constructor(id) {
    this.id = id;
    // One session per page load (PROTOCOL.md §11): reconnects of this page resume it; a reload
    // or a duplicated tab is a new session (its in-flight ops were this page's memory anyway).
    this.client = new PictureClient(websocketUrl(id), { session: randomSession() });
    this.canvas = $('picture');
    this.ctx = this.canvas.getContext('2d');
    this.overlay = $('overlay');
    this.overlayCtx = this.overlay.getContext('2d');
    this.viewport = $('viewport');
    this.stage = $('stage');
    // View transform: screen = pan + picture * zoom (CSS pixels, relative to the viewport).
    this.view = { zoom: 1, panX: 0, panY: 0 };
    // ImageData sharing memory with the picture buffer, so a redraw copies nothing in JS.
    this.image = null;
    // Canvas region waiting to be redrawn from the buffer at the next animation frame.
    this.dirty = null;
    this.previewsDirty = false;
    this.frameRequested = false;
    // Overlay region drawn last time, cleared before the next preview is drawn.
    this.overlayBox = null;
    // The gesture in progress (see pointerDown) or null.
    this.gesture = null;
    // {tool, color, width, points} of the latest pen or eraser gesture, for the automation hook.
    this.lastStroke = null;
    // Op of the gesture not sent yet (rect being dragged, stroke tail), previewed too.
    this.draft = null;
    // Pan drag in progress: {x, y, panX, panY, pointerId} or null.
    this.panning = null;
    this.spaceHeld = false;
    this.tool = 'pen';
    this.toastTimer = null;
    // A view-only token (PROTOCOL.md §13): the server rejects every draw, so the page offers
    // none (the picture, zoom, pan, the picker and the download stay).
    const token = pageToken();
    this.token = token;
    this.viewOnly = token !== null && tokenClaims(token)?.role === 'view';
    this.history = new HistoryPanel(id, token);
  }

  start() {
    document.title = `${this.id} · Raster`;
    $('title').textContent = this.id;
    const tokenQuery = this.token ? `?token=${encodeURIComponent(this.token)}` : '';
    $('download').href = `/pictures/${encodeURIComponent(this.id)}/snapshot.png${tokenQuery}`;
    $('download').setAttribute('download', `${this.id}.png`);
    this.bindClient();
    this.bindControls();
    this.bindPointer();
    this.installHook();
    this.history.start();
    if (this.viewOnly) {
      document.body.dataset.viewOnly = 'true';
      $('view-only').hidden = false;
      for (const el of document.querySelectorAll('.draw-only')) el.hidden = true;
    }
    this.selectTool(this.viewOnly ? 'pan' : 'pen');
    this.updateBrush();
    this.client.start();
  }

  installHook() {
    const client = this.client;
    const page = this;
    window.raster = {
      get seq() {
        const s = client.seq;
        if (s === null) return null;
        return s <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(s) : s;
      },
      get width() {
        return client.raster ? client.raster.width : 0;
      },
      get height() {
        return client.raster ? client.raster.height : 0;
      },
      rgba() {
        return client.raster ? client.raster.pixels.slice() : new Uint8Array(0);
      },
      get state() {
        return client.state;
      },
      get welcomes() {
        return client.welcomes;
      },
      get presence() {
        return client.presence;
      },
      // PROTOCOL.md §13: the page's token is view-only (drawing tools hidden).
      get viewOnly() {
        return page.viewOnly;
      },
      get pending() {
        return client.pending.size;
      },
      // PROTOCOL.md §10, §11: the highest seq storage has, whether all of our ops are in it, and
      // how often this page resumed (kept its picture) and sent ops again.
      get durable() {
        return Number(client.durableSeq);
      },
      get saved() {
        return client.saved;
      },
      get resumes() {
        return client.resumes;
      },
      get resent() {
        return client.resent;
      },
      // Ops this page has sent since it was loaded (client_seq keeps counting across connections).
      get sent() {
        return Number(client.nextClientSeq - 1n);
      },
      // PROTOCOL.md §15: the history panel, and the pixels of the version it shows (or null).
      get history() {
        return page.history.state();
      },
      versionRgba() {
        const shown = page.history.shown;
        return shown === null ? null : shown.pixels.slice();
      },
      get lastGesture() {
        const s = page.lastStroke;
        return s === null ? null : { ...s, color: [...s.color], points: s.points.map((p) => [...p]) };
      },
    };
  }

  // ---- client events ------------------------------------------------------------------------

  bindClient() {
    const c = this.client;
    c.addEventListener('picture', () => {
      const { width, height, pixels } = c.raster;
      const firstPicture = this.image === null;
      const resized = this.canvas.width !== width || this.canvas.height !== height;
      this.canvas.width = this.overlay.width = width;
      this.canvas.height = this.overlay.height = height;
      this.stage.style.width = `${width}px`;
      this.stage.style.height = `${height}px`;
      this.image = new ImageData(new Uint8ClampedArray(pixels.buffer, pixels.byteOffset, pixels.length), width, height);
      this.overlayBox = null;
      this.markDirty({ x0: 0, y0: 0, x1: width - 1, y1: height - 1 });
      $('size').textContent = `${width} × ${height}`;
      if (firstPicture || resized) this.resetView();
      rememberPicture({ id: this.id, width, height });
    });
    c.addEventListener('change', (e) => this.markDirty(e.detail));
    c.addEventListener('previews', () => {
      this.markPreviews();
      this.showSaved();
    });
    c.addEventListener('durable', () => this.showSaved());
    c.addEventListener('state', () => this.showState());
    c.addEventListener('presence', () => {
      $('presence').textContent = `${c.presence} online`;
    });
    c.addEventListener('rejected', (e) => this.toast(`Not drawn: ${e.detail.reason}`, 'error'));
    c.addEventListener('servererror', (e) => this.toast(`Server: ${e.detail.message} (${e.detail.code})`, 'error'));
    // The countdown of a pending reconnect.
    setInterval(() => {
      if (c.state === 'reconnecting') this.showState();
    }, 500);
  }

  showState() {
    const c = this.client;
    const el = $('state');
    let text;
    switch (c.state) {
      case 'connected':
        text = c.welcomes > 1 ? 'Reconnected' : 'Connected';
        break;
      case 'reconnecting': {
        const s = Math.max(0, (c.retryAt - Date.now()) / 1000);
        text = c.welcomes > 0 ? `Offline · retrying in ${s.toFixed(1)} s` : `Cannot connect · retrying in ${s.toFixed(1)} s`;
        break;
      }
      case 'stopped':
        text = 'Closed';
        break;
      default:
        text = 'Connecting…';
    }
    el.textContent = text;
    el.dataset.state = c.state === 'connected' && c.welcomes > 1 ? 'reconnected' : c.state;
    // While offline the picture may be stale and the presence count is unknown.
    $('presence').hidden = c.state !== 'connected';
    this.viewport.classList.toggle('offline', c.state !== 'connected' && c.welcomes > 0);
    if (c.state !== 'connected') this.endGesture(false);
  }

  /** "Saved" once storage has every op of ours (Durable reached our latest echo), else "Saving…". */
  showSaved() {
    const el = $('saved');
    const saved = this.client.saved;
    el.hidden = false;
    el.dataset.saved = saved ? 'yes' : 'no';
    el.textContent = saved ? 'Saved' : 'Saving…';
  }

  toast(text, kind = 'info') {
    const el = $('toast');
    el.textContent = text;
    el.dataset.kind = kind;
    el.hidden = false;
    clearTimeout(this.toastTimer);
    this.toastTimer = setTimeout(() => {
      el.hidden = true;
    }, SETTINGS.toastMs);
  }

  // ---- rendering ----------------------------------------------------------------------------

  markDirty(box) {
    if (box === null) return;
    this.dirty = union(this.dirty, box);
    // Previews are drawn over a copy of the picture: they must follow the picture too.
    if (this.overlayBox !== null) this.previewsDirty = true;
    this.requestFrame();
  }

  markPreviews() {
    this.previewsDirty = true;
    this.requestFrame();
  }

  requestFrame() {
    if (this.frameRequested) return;
    this.frameRequested = true;
    requestAnimationFrame(() => {
      this.frameRequested = false;
      this.render();
    });
  }

  render() {
    if (this.image === null) return;
    if (this.dirty !== null) {
      const d = this.dirty;
      this.ctx.putImageData(this.image, 0, 0, d.x0, d.y0, d.x1 - d.x0 + 1, d.y1 - d.y0 + 1);
      this.dirty = null;
      $('seq').textContent = String(this.client.seq);
    }
    if (this.previewsDirty) {
      this.previewsDirty = false;
      this.renderPreviews();
    }
  }

  /**
   * Draws the pending ops and the draft onto a copy of the region they touch, and shows the
   * pixels they change on the overlay. Exact as long as nobody else draws there meanwhile.
   */
  renderPreviews() {
    const raster = this.client.raster;
    if (this.overlayBox !== null) {
      const o = this.overlayBox;
      this.overlayCtx.clearRect(o.x0, o.y0, o.x1 - o.x0 + 1, o.y1 - o.y0 + 1);
      this.overlayBox = null;
    }
    const ops = [...this.client.pending.values()];
    if (this.draft !== null) ops.push(this.draft);
    let box = null;
    for (const op of ops) box = union(box, opBounds(op, raster.width, raster.height));
    if (box === null) return;
    const w = box.x1 - box.x0 + 1;
    const h = box.y1 - box.y0 + 1;
    const region = new Uint8Array(w * h * 4);
    for (let y = 0; y < h; y++) {
      const from = ((box.y0 + y) * raster.width + box.x0) * 4;
      region.set(raster.pixels.subarray(from, from + w * 4), y * w * 4);
    }
    const before = region.slice();
    const scratch = new Raster(w, h, region);
    for (const op of ops) scratch.apply(translate(op, box.x0, box.y0));
    // Unchanged pixels stay transparent on the overlay, so the picture shows through.
    for (let i = 0; i < region.length; i += 4) {
      if (
        region[i] === before[i] &&
        region[i + 1] === before[i + 1] &&
        region[i + 2] === before[i + 2] &&
        region[i + 3] === before[i + 3]
      ) {
        region[i + 3] = 0;
      }
    }
    this.overlayCtx.putImageData(new ImageData(new Uint8ClampedArray(region.buffer), w, h), box.x0, box.y0);
    this.overlayBox = box;
  }

  // ---- view ---------------------------------------------------------------------------------

  applyView() {
    const { zoom, panX, panY } = this.view;
    this.stage.style.transform = `translate(${panX}px, ${panY}px) scale(${zoom})`;
    $('zoom').textContent = `${Math.round(zoom * 100)}%`;
  }

  /** Actual size, centred when the picture fits, else its top-left corner at a small margin. */
  resetView() {
    const r = this.viewport.getBoundingClientRect();
    const { width, height } = this.client.raster;
    this.view.zoom = 1;
    this.view.panX = width <= r.width ? Math.round((r.width - width) / 2) : 16;
    this.view.panY = height <= r.height ? Math.round((r.height - height) / 2) : 16;
    this.applyView();
  }

  fitView() {
    const r = this.viewport.getBoundingClientRect();
    const { width, height } = this.client.raster;
    const zoom = Math.max(SETTINGS.minZoom, Math.min((r.width - 32) / width, (r.height - 32) / height, SETTINGS.maxZoom));
    this.view = { zoom, panX: (r.width - width * zoom) / 2, panY: (r.height - height * zoom) / 2 };
    this.applyView();
  }

  /** Zooms by `factor` keeping the picture point under (sx, sy) (viewport pixels) in place. */
  zoomAt(factor, sx, sy) {
    const v = this.view;
    const zoom = Math.min(SETTINGS.maxZoom, Math.max(SETTINGS.minZoom, v.zoom * factor));
    const px = (sx - v.panX) / v.zoom;
    const py = (sy - v.panY) / v.zoom;
    this.view = { zoom, panX: sx - px * zoom, panY: sy - py * zoom };
    this.applyView();
  }

  zoomCentre(factor) {
    const r = this.viewport.getBoundingClientRect();
    this.zoomAt(factor, r.width / 2, r.height / 2);
  }

  /** The picture pixel under a pointer event. */
  pictureAt(event) {
    const r = this.viewport.getBoundingClientRect();
    const { zoom, panX, panY } = this.view;
    return [Math.floor((event.clientX - r.left - panX) / zoom), Math.floor((event.clientY - r.top - panY) / zoom)];
  }

  // ---- controls -----------------------------------------------------------------------------

  bindControls() {
    for (const b of document.querySelectorAll('[data-tool]')) {
      if (b.tagName === 'BUTTON') b.addEventListener('click', () => this.selectTool(b.dataset.tool));
    }
    for (const id of ['color', 'opacity', 'width']) $(id).addEventListener('input', () => this.updateBrush());
    $('zoom-in').addEventListener('click', () => this.zoomCentre(SETTINGS.zoomStep));
    $('zoom-out').addEventListener('click', () => this.zoomCentre(1 / SETTINGS.zoomStep));
    $('zoom-reset').addEventListener('click', () => this.client.raster && this.resetView());
    $('zoom-fit').addEventListener('click', () => this.client.raster && this.fitView());
    const keys = { p: 'pen', e: 'eraser', r: 'rect', x: 'pixel', i: 'picker', h: 'pan' };
    window.addEventListener('keydown', (e) => {
      if (e.target instanceof HTMLInputElement && e.target.type !== 'range') return;
      if (e.ctrlKey || e.metaKey || e.altKey) return;
      if (e.key === ' ') {
        this.spaceHeld = true;
        this.viewport.dataset.panning = 'ready';
        e.preventDefault();
      } else if (keys[e.key.toLowerCase()]) {
        this.selectTool(keys[e.key.toLowerCase()]);
      } else if (e.key === '+' || e.key === '=') {
        this.zoomCentre(SETTINGS.zoomStep);
      } else if (e.key === '-') {
        this.zoomCentre(1 / SETTINGS.zoomStep);
      } else if (e.key === '0' && this.client.raster) {
        this.resetView();
      } else if (e.key.toLowerCase() === 'f' && this.client.raster) {
        this.fitView();
      } else if (e.key === 'Escape') {
        this.endGesture(false);
      }
    });
    window.addEventListener('keyup', (e) => {
      if (e.key === ' ') {
        this.spaceHeld = false;
        delete this.viewport.dataset.panning;
      }
    });
  }

  selectTool(tool) {
    // A view-only page keeps to the tools that do not draw.
    if (this.viewOnly && tool !== 'pan' && tool !== 'picker') return;
    this.tool = tool;
    this.viewport.dataset.tool = tool;
    for (const b of document.querySelectorAll('button[data-tool]')) {
      const on = b.dataset.tool === tool;
      b.classList.toggle('active', on);
      b.setAttribute('aria-checked', String(on));
    }
  }

  updateBrush() {
    const alpha = Number($('opacity').value);
    $('opacity-value').textContent = `${Math.round((alpha / 255) * 100)}%`;
    $('width-value').textContent = `${$('width').value} px`;
    const [r, g, b] = hexToRgb($('color').value);
    $('swatch').style.setProperty('--swatch', `rgba(${r}, ${g}, ${b}, ${alpha / 255})`);
  }

  color() {
    return [...hexToRgb($('color').value), Number($('opacity').value)];
  }

  pick([x, y]) {
    const raster = this.client.raster;
    if (!raster || x < 0 || y < 0 || x >= raster.width || y >= raster.height) return;
    const i = (y * raster.width + x) * 4;
    const px = raster.pixels.subarray(i, i + 4);
    $('color').value = rgbToHex(px);
    $('opacity').value = String(Math.max(1, px[3]));
    this.updateBrush();
  }

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
  }

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
  }

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
  }

  pointerUp(e) {
    if (this.panning) {
      this.panning = null;
      this.viewport.dataset.panning = this.spaceHeld ? 'ready' : '';
      return;
    }
    const g = this.gesture;
    if (!g || e.pointerId !== g.pointerId) return;
    this.endGesture(true);
  }

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
  }

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
  }

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
  }

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
  }

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
  }
}

const id = pictureIdFromPath();
if (!ID_PATTERN.test(id)) {
  document.body.classList.add('invalid');
  $('title').textContent = 'Invalid picture name';
  $('state').textContent = 'Not connected';
  $('state').dataset.state = 'stopped';
} else {
  new Page(id).start();
}
