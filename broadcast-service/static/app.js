// The drawing page (/p/{id}): view (zoom, pan), tools, previews and status around a
// PictureClient (client.js), which owns the connection and the picture's RGBA buffer.
//
// This file holds the page's state, its start, the client's events and the status line; the
// page's other methods live by job in view.js (rendering, previews, zoom and pan), tools.js (the
// controls, the picker) and pointer.js (gestures into ops), and settings.js has what they share.
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

import { PictureClient, randomSession } from './client.js';
import { HistoryPanel } from './history.js';
import { pointerMethods } from './pointer.js';
import { rememberPicture } from './recent.js';
import { $, SETTINGS } from './settings.js';
import { toolMethods } from './tools.js';
import { viewMethods } from './view.js';

const ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

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
}

// The view, the tools and the gestures, each in a module of its own.
Object.assign(Page.prototype, viewMethods, toolMethods, pointerMethods);

const id = pictureIdFromPath();
if (!ID_PATTERN.test(id)) {
  document.body.classList.add('invalid');
  $('title').textContent = 'Invalid picture name';
  $('state').textContent = 'Not connected';
  $('state').dataset.state = 'stopped';
} else {
  new Page(id).start();
}
