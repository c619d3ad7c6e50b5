// The browser's port of the `protocol` crate, one file per job as in the crate: the codec of
// PROTOCOL.md §2 (codec.js), the rasterizer of §4 (raster.js) and an exact PNG decoder
// (png.js). This module re-exports the three, for the page and the tests that import it whole.

export * from './codec.js';
export * from './raster.js';
export * from './png.js';
