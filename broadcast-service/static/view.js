// The drawing page's view: the picture canvas redrawn from the buffer, the previews of our ops
// not yet sequenced on the overlay, zoom and pan. Methods of the page (app.js's `Page`), which
// holds the state they use.

import { union } from './client.js';
import { Raster, opBounds } from './raster.js';
import { $, SETTINGS } from './settings.js';

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

export const viewMethods = {
  // ---- rendering ----------------------------------------------------------------------------

  markDirty(box) {
    if (box === null) return;
    this.dirty = union(this.dirty, box);
    // Previews are drawn over a copy of the picture: they must follow the picture too.
    if (this.overlayBox !== null) this.previewsDirty = true;
    this.requestFrame();
  },

  markPreviews() {
    this.previewsDirty = true;
    this.requestFrame();
  },

  requestFrame() {
    if (this.frameRequested) return;
    this.frameRequested = true;
    requestAnimationFrame(() => {
      this.frameRequested = false;
      this.render();
    });
  },

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
  },

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
  },

  // ---- view ---------------------------------------------------------------------------------

  applyView() {
    const { zoom, panX, panY } = this.view;
    this.stage.style.transform = `translate(${panX}px, ${panY}px) scale(${zoom})`;
    $('zoom').textContent = `${Math.round(zoom * 100)}%`;
  },

  /** Actual size, centred when the picture fits, else its top-left corner at a small margin. */
  resetView() {
    const r = this.viewport.getBoundingClientRect();
    const { width, height } = this.client.raster;
    this.view.zoom = 1;
    this.view.panX = width <= r.width ? Math.round((r.width - width) / 2) : 16;
    this.view.panY = height <= r.height ? Math.round((r.height - height) / 2) : 16;
    this.applyView();
  },

  fitView() {
    const r = this.viewport.getBoundingClientRect();
    const { width, height } = this.client.raster;
    const zoom = Math.max(SETTINGS.minZoom, Math.min((r.width - 32) / width, (r.height - 32) / height, SETTINGS.maxZoom));
    this.view = { zoom, panX: (r.width - width * zoom) / 2, panY: (r.height - height * zoom) / 2 };
    this.applyView();
  },

  /** Zooms by `factor` keeping the picture point under (sx, sy) (viewport pixels) in place. */
  zoomAt(factor, sx, sy) {
    const v = this.view;
    const zoom = Math.min(SETTINGS.maxZoom, Math.max(SETTINGS.minZoom, v.zoom * factor));
    const px = (sx - v.panX) / v.zoom;
    const py = (sy - v.panY) / v.zoom;
    this.view = { zoom, panX: sx - px * zoom, panY: sy - py * zoom };
    this.applyView();
  },

  zoomCentre(factor) {
    const r = this.viewport.getBoundingClientRect();
    this.zoomAt(factor, r.width / 2, r.height / 2);
  },

  /** The picture pixel under a pointer event. */
  pictureAt(event) {
    const r = this.viewport.getBoundingClientRect();
    const { zoom, panX, panY } = this.view;
    return [Math.floor((event.clientX - r.left - panX) / zoom), Math.floor((event.clientY - r.top - panY) / zoom)];
  },
};
