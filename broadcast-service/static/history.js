// The history panel of the drawing page (PROTOCOL.md §15): a slider over the picture's stored
// versions, from the oldest to "live", and a button that plays the timelapse.
//
// A version is shown on its own canvas above the live picture (the live picture keeps updating
// underneath, unseen); while one is shown, drawing is paused (the page asks `drawingPaused`).
// Versions are decoded with png.js, so the canvas gets the stored pixels exactly. The
// timelapse is the server's animated PNG in an <img> over the stage, scaled like the picture.

import { decodePng } from './png.js';

const $ = (id) => document.getElementById(id);

export class HistoryPanel {
  /** `id`: the picture; `token`: the page's token or null (`view` is enough to read history). */
  constructor(id, token) {
    this.id = id;
    this.token = token;
    // The listed versions: [{seq, time_ms, size}], oldest first.
    this.versions = [];
    // The version shown: {seq, width, height, pixels} or null (live).
    this.shown = null;
    // Bumped by every slider move, so that a slow fetch cannot show an outdated choice.
    this.generation = 0;
    this.playing = false;
    this.slider = $('history');
    this.label = $('history-label');
    this.canvas = $('version');
    this.img = $('timelapse');
  }

  url(path, params = {}) {
    const query = new URLSearchParams(params);
    if (this.token) query.set('token', this.token);
    const q = query.toString();
    return `/pictures/${encodeURIComponent(this.id)}/${path}${q ? `?${q}` : ''}`;
  }

  /** Whether drawing is paused (a version or the timelapse is on screen). */
  get drawingPaused() {
    return this.shown !== null || this.playing;
  }

  start() {
    this.slider.addEventListener('input', () => this.select(Number(this.slider.value)));
    $('history-refresh').addEventListener('click', () => this.refresh());
    $('history-play').addEventListener('click', () => (this.playing ? this.stop() : this.play()));
    this.refresh();
  }

  /** Fetches the list of versions; the slider ends at "live". */
  async refresh() {
    try {
      const res = await fetch(this.url('history'));
      if (!res.ok) throw new Error(`history: HTTP ${res.status}`);
      const body = await res.json();
      this.versions = body.versions;
    } catch (e) {
      this.label.textContent = 'unavailable';
      return;
    }
    const wasLive = this.shown === null;
    this.slider.max = String(this.versions.length);
    this.slider.disabled = this.versions.length === 0;
    $('history-play').disabled = this.versions.length === 0;
    if (wasLive) this.slider.value = String(this.versions.length);
    this.describe();
  }

  describe() {
    const i = Number(this.slider.value);
    if (i >= this.versions.length) {
      this.label.textContent = this.versions.length === 0 ? 'no versions yet' : 'live';
      return;
    }
    const v = this.versions[i];
    this.label.textContent = `seq ${v.seq} · ${new Date(v.time_ms).toLocaleString()}`;
  }

  /** Shows version number `i` of the list (the list's length: live). */
  async select(i) {
    const generation = ++this.generation;
    this.describe();
    if (i >= this.versions.length) {
      this.showLive();
      return;
    }
    const seq = this.versions[i].seq;
    const res = await fetch(this.url(`history/${seq}.png`));
    if (generation !== this.generation) return;
    if (!res.ok) {
      this.label.textContent = `seq ${seq}: HTTP ${res.status}`;
      return;
    }
    const png = await decodePng(new Uint8Array(await res.arrayBuffer()));
    if (generation !== this.generation) return;
    this.stop();
    this.shown = { seq, width: png.width, height: png.height, pixels: png.pixels };
    this.canvas.width = png.width;
    this.canvas.height = png.height;
    const data = new Uint8ClampedArray(png.pixels.buffer, png.pixels.byteOffset, png.pixels.length);
    this.canvas.getContext('2d').putImageData(new ImageData(data, png.width, png.height), 0, 0);
    this.canvas.hidden = false;
    document.body.dataset.history = 'version';
  }

  showLive() {
    this.shown = null;
    this.canvas.hidden = true;
    if (!this.playing) delete document.body.dataset.history;
  }

  /** Plays the timelapse of every version over the picture (looping), until stopped. */
  play() {
    this.generation++;
    this.slider.value = String(this.versions.length);
    this.showLive();
    this.describe();
    this.playing = true;
    this.img.src = this.url('timelapse', { delay: '300' });
    this.img.hidden = false;
    $('history-play').textContent = 'Stop';
    document.body.dataset.history = 'timelapse';
  }

  stop() {
    if (!this.playing) return;
    this.playing = false;
    this.img.hidden = true;
    this.img.removeAttribute('src');
    $('history-play').textContent = 'Play timelapse';
    if (this.shown === null) delete document.body.dataset.history;
  }

  /** For the automation hook. */
  state() {
    return {
      versions: this.versions.map((v) => ({ ...v })),
      shown: this.shown === null ? null : this.shown.seq,
      playing: this.playing,
      timelapse: this.playing ? this.img.getAttribute('src') : null,
    };
  }
}
