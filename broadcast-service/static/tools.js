// The drawing page's tools: the controls (tool, colour, width, zoom buttons), the picker.
// Methods of the page (app.js's `Page`), which holds the state they use.

import { $, SETTINGS } from './settings.js';

function hexToRgb(hex) {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

function rgbToHex([r, g, b]) {
  return `#${[r, g, b].map((v) => v.toString(16).padStart(2, '0')).join('')}`;
}

export const toolMethods = {
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
  },

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
  },

  updateBrush() {
    const alpha = Number($('opacity').value);
    $('opacity-value').textContent = `${Math.round((alpha / 255) * 100)}%`;
    $('width-value').textContent = `${$('width').value} px`;
    const [r, g, b] = hexToRgb($('color').value);
    $('swatch').style.setProperty('--swatch', `rgba(${r}, ${g}, ${b}, ${alpha / 255})`);
  },

  color() {
    return [...hexToRgb($('color').value), Number($('opacity').value)];
  },

  pick([x, y]) {
    const raster = this.client.raster;
    if (!raster || x < 0 || y < 0 || x >= raster.width || y >= raster.height) return;
    const i = (y * raster.width + x) * 4;
    const px = raster.pixels.subarray(i, i + 4);
    $('color').value = rgbToHex(px);
    $('opacity').value = String(Math.max(1, px[3]));
    this.updateBrush();
  },
};
