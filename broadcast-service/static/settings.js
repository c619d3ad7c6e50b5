// What the drawing page's modules (app.js, view.js, tools.js, pointer.js) share: its settings
// and the element lookup.

/** Page settings; limits match PROTOCOL.md §5 defaults (the server's word is final). */
export const SETTINGS = {
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

/** The page's element with this id. */
export const $ = (id) => document.getElementById(id);
