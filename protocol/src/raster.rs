//! The one rasterizer: what an op does to pixels (PROTOCOL.md §4). Every party that keeps a
//! picture (the picture service, the Rust client, tests) uses this code, and the browser
//! client's JavaScript port is checked against the same vectors.
//!
//! # Work is bounded by the picture, not by the op
//!
//! An op may carry coordinates a million pixels away and a stroke may zig-zag 4,095 times
//! across the picture with width 256, so nothing here walks what lies outside the picture and
//! no stroke costs more than a small multiple of the picture's area:
//!
//! - A stroke's spine is clipped segment by segment in closed form ([`ClippedLine`]): only the
//!   points of `line` that can reach the picture (within the stroke's radius of it) are ever
//!   produced, and their number and bounding box are known before any pixel is touched.
//! - The covered set is built in a bitmap over the affected box, then blended once per pixel
//!   in runs, which is what makes "every covered pixel is blended exactly once" hold.
//! - Typical strokes stamp their discs segment by segment: the discs of one segment cover one
//!   span per row (see `Disc::widen_run`), set whole `u64` words at a time. When the spine is
//!   so dense that stamping would cost more than a few passes over the affected box, the
//!   coverage is computed instead from an exact distance transform of the spine: per column,
//!   the distance to the nearest spine point of that column (capped just beyond the radius);
//!   per row, the union of the spans those distances allow. That is exact integer arithmetic,
//!   linear in the box, and independent of how many times the spine retraces itself.
//!
//! # Thin strokes are bound by memory, not arithmetic
//!
//! A stroke a few pixels wide touches a cache line or two per row in rows 8 KiB apart, so its
//! cost is mostly waiting for the picture's memory. Two things keep that wait short: the
//! covered runs are listed before any is blended and their lines are loaded together
//! (`Raster::blend_bitmap`), and each thread keeps its stroke buffers (`Scratch`) so a
//! stroke neither allocates nor clears more than the words it used.

use crate::wire::{Op, Point, Rgba};

/// A `width × height` RGBA8 picture, row-major.
#[derive(Clone, PartialEq, Eq)]
pub struct Raster {
    /// Columns; every op is clipped to `0..width`.
    width: u32,
    /// Rows; every op is clipped to `0..height`.
    height: u32,
    /// `width*height*4` bytes, row-major RGBA8: the layout of the PNG and of the vectors.
    pixels: Vec<u8>,
}

impl std::fmt::Debug for Raster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Raster")
            .field("width", &self.width)
            .field("height", &self.height)
            .finish_non_exhaustive()
    }
}

/// The colour of a fresh picture.
pub const WHITE: Rgba = [255, 255, 255, 255];

/// How a stroke's covered set is computed. Both strategies give identical pixels; the choice
/// only changes the cost. [`StrokeStrategy::Auto`] is what [`Raster::apply`] uses; the others
/// exist so tests and benches can exercise each path on any input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StrokeStrategy {
    /// Stamp when its estimated cost is within [`DT_COST_FACTOR`] of the distance transform's.
    #[default]
    Auto,
    /// Always stamp one span per row of every spine point's disc.
    Stamp,
    /// Always use the distance transform over the affected box (but for strokes wider than
    /// [`DT_MAX_REACH`] allows, which are always stamped).
    DistanceTransform,
}

/// Stamping is chosen while `spine points × rows per disc × words per span` is at most this
/// many times the number of pixels of the distance transform's box. Measured with the raster
/// bench: one span costs about as much as one or two pixels of the transform.
pub const DT_COST_FACTOR: u64 = 2;

/// The widest reach (half the stroke width) the distance transform handles: its distances are
/// `u8`s that go up to `reach + 2`. Strokes of width 508 and more are always stamped.
pub const DT_MAX_REACH: i64 = u8::MAX as i64 - 2;

impl Raster {
    /// A fresh picture, every pixel `(255, 255, 255, 255)`.
    pub fn new(width: u32, height: u32) -> Self {
        let len = width as usize * height as usize * 4;
        Self {
            width,
            height,
            pixels: vec![255; len],
        }
    }

    /// A picture from existing RGBA8 bytes; `None` unless `pixels.len() == width*height*4`.
    pub fn from_rgba(width: u32, height: u32, pixels: Vec<u8>) -> Option<Self> {
        (pixels.len() == width as usize * height as usize * 4).then_some(Self {
            width,
            height,
            pixels,
        })
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Row-major RGBA8 bytes.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// The row-major RGBA8 bytes, without copying.
    pub fn into_pixels(self) -> Vec<u8> {
        self.pixels
    }

    /// The pixel at `(x, y)`, or `None` outside the picture.
    pub fn pixel(&self, x: u32, y: u32) -> Option<Rgba> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = (y as usize * self.width as usize + x as usize) * 4;
        let p = &self.pixels[i..i + 4];
        Some([p[0], p[1], p[2], p[3]])
    }

    /// Applies one op. Returns how many pixels it covered inside the picture (each counted once).
    pub fn apply(&mut self, op: &Op) -> u64 {
        self.apply_with(op, StrokeStrategy::Auto)
    }

    /// [`Raster::apply`] with the stroke strategy forced; the pixels are the same whatever the
    /// strategy.
    pub fn apply_with(&mut self, op: &Op, strategy: StrokeStrategy) -> u64 {
        match op {
            Op::Pixels { color, points } => self.pixels_op(*color, points),
            Op::Rect { x, y, w, h, color } => self.rect(*x, *y, *w, *h, *color),
            Op::Stroke {
                color,
                width,
                points,
            } => self.stroke(*color, *width, points, strategy),
            Op::Patch { x, y, w, h, rgba } => self.patch(*x, *y, *w, *h, rgba),
            Op::Clear { color } => {
                for px in self.pixels.chunks_exact_mut(4) {
                    px.copy_from_slice(color);
                }
                u64::from(self.width) * u64::from(self.height)
            }
        }
    }

    fn index(&self, x: u32, y: u32) -> usize {
        (y as usize * self.width as usize + x as usize) * 4
    }

    fn pixels_op(&mut self, color: Rgba, points: &[Point]) -> u64 {
        let mut inside: Vec<u32> = points
            .iter()
            .filter(|p| {
                p.x >= 0 && p.y >= 0 && (p.x as u32) < self.width && (p.y as u32) < self.height
            })
            .map(|p| p.y as u32 * self.width + p.x as u32)
            .collect();
        inside.sort_unstable();
        inside.dedup();
        for &i in &inside {
            let i = i as usize * 4;
            blend(&mut self.pixels[i..i + 4], color);
        }
        inside.len() as u64
    }

    /// Clips `[x, x+w) × [y, y+h)` to the picture; `None` when nothing is left.
    fn clip(&self, x: i32, y: i32, w: u32, h: u32) -> Option<(u32, u32, u32, u32)> {
        let x0 = i64::from(x).max(0);
        let y0 = i64::from(y).max(0);
        let x1 = (i64::from(x) + i64::from(w)).min(i64::from(self.width));
        let y1 = (i64::from(y) + i64::from(h)).min(i64::from(self.height));
        (x0 < x1 && y0 < y1).then_some((x0 as u32, y0 as u32, x1 as u32, y1 as u32))
    }

    fn rect(&mut self, x: i32, y: i32, w: u32, h: u32, color: Rgba) -> u64 {
        let Some((x0, y0, x1, y1)) = self.clip(x, y, w, h) else {
            return 0;
        };
        let blender = Blender::new(color);
        for py in y0..y1 {
            let start = self.index(x0, py);
            let end = self.index(x1, py);
            blender.run(&mut self.pixels[start..end]);
        }
        u64::from(x1 - x0) * u64::from(y1 - y0)
    }

    fn patch(&mut self, x: i32, y: i32, w: u32, h: u32, rgba: &[u8]) -> u64 {
        if rgba.len() as u64 != u64::from(w) * u64::from(h) * 4 {
            return 0;
        }
        let Some((x0, y0, x1, y1)) = self.clip(x, y, w, h) else {
            return 0;
        };
        for py in y0..y1 {
            let j = (i64::from(py) - i64::from(y)) as usize;
            let i = (i64::from(x0) - i64::from(x)) as usize;
            let s = (j * w as usize + i) * 4;
            let src = &rgba[s..s + (x1 - x0) as usize * 4];
            let (start, end) = (self.index(x0, py), self.index(x1, py));
            for (d, s) in self.pixels[start..end]
                .chunks_exact_mut(4)
                .zip(src.chunks_exact(4))
            {
                blend(d, [s[0], s[1], s[2], s[3]]);
            }
        }
        u64::from(x1 - x0) * u64::from(y1 - y0)
    }

    fn stroke(
        &mut self,
        color: Rgba,
        width: u16,
        points: &[Point],
        strategy: StrokeStrategy,
    ) -> u64 {
        if points.is_empty() || self.width == 0 || self.height == 0 {
            return 0;
        }
        // Taken, not borrowed: a panic halfway leaves the thread a fresh (empty, zeroed) one.
        let mut scratch = SCRATCH.with(|s| s.take());
        let slot = usize::from(width);
        let disc = match scratch.discs.get_mut(slot).and_then(Option::take) {
            Some(disc) => disc,
            None => Disc::new(width),
        };
        let reach = disc.reach;
        let (w, h) = (i64::from(self.width), i64::from(self.height));
        // Spine points farther than the radius from the picture cannot cover any of it.
        let bounds = Bounds {
            x0: -reach,
            y0: -reach,
            x1: w - 1 + reach,
            y1: h - 1 + reach,
        };
        let covered = self.stroke_in(color, &disc, points, &bounds, strategy, &mut scratch);
        if slot < CACHED_DISCS {
            if scratch.discs.len() <= slot {
                scratch.discs.resize_with(slot + 1, || None);
            }
            scratch.discs[slot] = Some(disc);
        }
        scratch.trim();
        SCRATCH.with(|s| s.replace(scratch));
        covered
    }

    /// [`Raster::stroke`] with its buffers; leaves `scratch.bits` all zero again.
    fn stroke_in(
        &mut self,
        color: Rgba,
        disc: &Disc,
        points: &[Point],
        bounds: &Bounds,
        strategy: StrokeStrategy,
        scratch: &mut Scratch,
    ) -> u64 {
        let reach = disc.reach;
        let (w, h) = (i64::from(self.width), i64::from(self.height));
        let lines = &mut scratch.lines;
        lines.clear();
        if points.len() == 1 {
            lines.extend(ClippedLine::new(points[0], points[0], bounds));
        } else {
            lines.extend(
                points
                    .windows(2)
                    .filter_map(|pair| ClippedLine::new(pair[0], pair[1], bounds)),
            );
        }
        let Some(spine) = lines
            .iter()
            .map(ClippedLine::bounds)
            .reduce(|a, b| a.union(&b))
        else {
            return 0;
        };
        let area = Bounds {
            x0: (spine.x0 - reach).max(0),
            y0: (spine.y0 - reach).max(0),
            x1: (spine.x1 + reach).min(w - 1),
            y1: (spine.y1 + reach).min(h - 1),
        };
        if area.is_empty() {
            return 0;
        }
        let mut cover = Bitmap::reuse(
            &area,
            std::mem::take(&mut scratch.bits),
            std::mem::take(&mut scratch.touched),
        );
        // The distance transform counts distances in `u8`, capped at `reach + 1`, and adds one
        // to a capped distance before capping it again: `reach + 2` must fit. Wider strokes
        // (only under a raised `--max-stroke-width`) are stamped, whatever the strategy: the
        // pixels are the same, and the transform got them wrong (found by fuzzing).
        let use_stamp = reach > DT_MAX_REACH
            || match strategy {
                StrokeStrategy::Stamp => true,
                StrokeStrategy::DistanceTransform => false,
                StrokeStrategy::Auto => {
                    // Written for stamping one span per row of each run; stamping now widens a
                    // row bound per run and sets one span per row per segment, never more work, so
                    // this overestimates it and Auto stamps at least whenever it used to.
                    let rows = 2 * reach as u64 + 1;
                    let spans: u64 = lines.iter().map(|l| l.runs() * rows + l.len).sum();
                    let stamp_cost = spans * (1 + rows / 64);
                    let dt_cost = spine.width().max(area.width()) * area.height()
                        + spine.area()
                        + area.area();
                    stamp_cost <= DT_COST_FACTOR * dt_cost
                }
            };
        if use_stamp {
            let rows = area.height() as usize;
            let (left, right) = (&mut scratch.left, &mut scratch.right);
            left.clear();
            left.resize(rows, i64::MAX);
            right.clear();
            right.resize(rows, i64::MIN);
            for line in lines.iter().cloned() {
                // The rows this segment's discs can reach; `left`/`right` are reset on them
                // after each segment, so every segment starts from empty rows.
                let b = line.bounds();
                let top = (b.y0 - reach).max(area.y0);
                let bottom = (b.y1 + reach).min(area.y1);
                let x_major = line.x_major;
                // Consecutive spine points on one row (x-major line) or one column (y-major)
                // form a run whose discs are widened together (see `Disc::stamp_run`).
                let mut run: Option<(i64, i64, i64)> = None;
                for (cx, cy) in line {
                    let (fixed, var) = if x_major { (cy, cx) } else { (cx, cy) };
                    run = match run {
                        Some((f, lo, hi)) if f == fixed => Some((f, lo.min(var), hi.max(var))),
                        done => {
                            if let Some(done) = done {
                                disc.stamp_run(&mut cover, left, right, x_major, done);
                            }
                            Some((fixed, var, var))
                        }
                    };
                }
                if let Some(done) = run {
                    disc.stamp_run(&mut cover, left, right, x_major, done);
                }
                if reach == 0 || top > bottom {
                    continue;
                }
                let span = (top - area.y0) as usize..=(bottom - area.y0) as usize;
                for (py, (l, r)) in (top..).zip(left[span.clone()].iter_mut().zip(&mut right[span]))
                {
                    let (lo, hi) = ((*l).max(area.x0), (*r).min(area.x1));
                    if lo <= hi {
                        cover.set_span(py, lo, hi);
                    }
                    (*l, *r) = (i64::MAX, i64::MIN);
                }
            }
        } else {
            let mut features = Bitmap::new(&spine);
            for line in lines.iter().cloned() {
                for (cx, cy) in line {
                    features.set(cx, cy);
                }
            }
            distance_cover(&features, disc, &mut cover);
        }
        let covered = self.blend_bitmap(&mut cover, color, &mut scratch.runs);
        (scratch.bits, scratch.touched) = (cover.bits, cover.touched);
        covered
    }

    /// Blends `color` once onto every pixel set in `cover` and clears it; returns how many
    /// pixels there were. `runs` is scratch space.
    ///
    /// A stroke's rows lie far apart in the picture, so nearly every run starts with a cache
    /// miss, and blending run after run leaves the core waiting on one miss at a time (that
    /// wait was most of a thin stroke's cost). So the runs are listed first; then, a batch at
    /// a time, one byte of each of their cache lines is read in a tight loop of independent
    /// loads that the core keeps in flight together, and only then are they blended, from
    /// cache. (A prefetch instruction would say this directly, but needs `unsafe`.)
    fn blend_bitmap(&mut self, cover: &mut Bitmap, color: Rgba, runs: &mut Vec<Run>) -> u64 {
        let mut count = 0;
        runs.clear();
        let area = cover.area;
        for (row, (words, touched)) in cover
            .bits
            .chunks_exact_mut(cover.words)
            .zip(&mut cover.touched)
            .enumerate()
        {
            let (first, last) = std::mem::replace(touched, UNTOUCHED);
            if first > last {
                continue;
            }
            let py = (area.y0 + row as i64) as usize;
            let row_start = (py * self.width as usize + area.x0 as usize) * 4;
            for (wi, word) in words[first..=last].iter_mut().enumerate() {
                let mut bits = std::mem::take(word);
                while bits != 0 {
                    let start = bits.trailing_zeros() as usize;
                    let len = (bits >> start).trailing_ones() as usize;
                    count += len as u64;
                    bits &= if start + len == 64 {
                        0
                    } else {
                        !0u64 << (start + len)
                    };
                    let x = row_start + ((first + wi) * 64 + start) * 4;
                    runs.push(Run {
                        start: x,
                        end: x + len * 4,
                    });
                }
            }
        }
        if color[3] == 0 {
            return count;
        }
        let blender = Blender::new(color);
        // A batch's lines fit the first-level cache; a whole stroke's may not.
        for batch in runs.chunks(WARM_BATCH) {
            let mut warm = 0u8;
            for run in batch {
                warm ^= self.pixels[run.start] ^ self.pixels[run.end - 1];
                // Lines between the first and the last: only runs over 16 pixels have them.
                if run.end - run.start > 64 {
                    for at in (run.start + 64..run.end).step_by(64) {
                        warm ^= self.pixels[at];
                    }
                }
            }
            // Keeps the loads: their only purpose is to bring the lines into cache.
            std::hint::black_box(warm);
            blender.runs(&mut self.pixels, batch);
        }
        count
    }
}

/// Runs whose lines [`Raster::blend_bitmap`] brings into cache before blending them: enough
/// for many misses in flight, few enough for their lines to stay in the first-level cache.
const WARM_BATCH: usize = 64;

/// The buffers of one stroke, kept per thread between strokes so that a typical stroke
/// allocates nothing and clears only the words it used (a thin stroke's box is mostly empty).
#[derive(Default)]
struct Scratch {
    /// `discs[width]`: the disc of each width below [`CACHED_DISCS`] met so far.
    discs: Vec<Option<Disc>>,
    /// The stroke's segments, clipped.
    lines: Vec<ClippedLine>,
    /// The coverage bitmap's words; all zero between strokes ([`Raster::blend_bitmap`]
    /// clears what it read).
    bits: Vec<u64>,
    /// The coverage bitmap's touched words per row.
    touched: Vec<(usize, usize)>,
    /// Per row of the box, the leftmost column one segment's discs cover (`i64::MAX` when
    /// none): with `right`, the one span a segment adds to the row.
    left: Vec<i64>,
    /// Per row of the box, the rightmost column one segment's discs cover (`i64::MIN`).
    right: Vec<i64>,
    /// The covered runs, listed before any is blended.
    runs: Vec<Run>,
}

/// Buffers above this many bytes are dropped after the stroke rather than kept for the next:
/// a thread keeps what typical strokes need, not what the largest one needed.
const SCRATCH_KEEP_BYTES: usize = 1 << 20;

/// Widths whose discs a thread keeps ([`Scratch::discs`]): the common ones, a few KiB.
const CACHED_DISCS: usize = 65;

impl Scratch {
    fn trim(&mut self) {
        fn cap<T>(v: &mut Vec<T>) {
            if v.capacity() * std::mem::size_of::<T>() > SCRATCH_KEEP_BYTES {
                *v = Vec::new();
            }
        }
        cap(&mut self.lines);
        cap(&mut self.bits);
        cap(&mut self.touched);
        cap(&mut self.left);
        cap(&mut self.right);
        cap(&mut self.runs);
    }
}

thread_local! {
    /// One [`Scratch`] per thread: rasters on different threads never share buffers.
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// Bytes `start..end` of the picture: one covered run of a row.
struct Run {
    start: usize,
    end: usize,
}

/// A stroke's disc: which offsets from a spine point it covers.
struct Disc {
    /// The largest `|dy|` (and `|dx|`) covered: `floor(width / 2)`.
    reach: i64,
    /// `half[|dy|]`: the largest `|dx|` with `4*(dx² + dy²) <= width²` (PROTOCOL.md §4), the
    /// half-length of the disc's span on the row `|dy|` away from its centre; it turns a disc
    /// into one span per row.
    half: Vec<i64>,
    /// `half[|k - reach|]` for `k` in `0..=2*reach`: the spans of the rows from `reach`
    /// above the centre to `reach` below it, in order, so a run's rows zip with it.
    profile: Vec<i64>,
}

impl Disc {
    fn new(width: u16) -> Self {
        let r2 = i64::from(width) * i64::from(width);
        let reach = i64::from(width / 2);
        // The span only narrows away from the centre, so each row's search starts where the
        // previous row's ended: O(reach) steps in all (0.3 ms at width 65,535). Starting
        // every row from `reach` was O(reach²), about a second per stroke of width 65,535
        // even in a release build (found by fuzzing; widths that large pass only a raised
        // `--max-stroke-width`, but a client applies whatever its server sends).
        let mut dx = reach;
        let half = (0..=reach)
            .map(|dy| {
                while 4 * (dx * dx + dy * dy) > r2 {
                    dx -= 1;
                }
                dx
            })
            .collect::<Vec<i64>>();
        let profile = (-reach..=reach)
            .map(|dy| half[dy.unsigned_abs() as usize])
            .collect();
        Self {
            reach,
            half,
            profile,
        }
    }

    /// Adds a run of spine points (see [`Disc::widen_run`]) to the segment's row bounds, or
    /// for a disc of reach 0, which is its centre, inside the box, sets it in `cover` as is.
    #[inline(always)]
    fn stamp_run(
        &self,
        cover: &mut Bitmap,
        left: &mut [i64],
        right: &mut [i64],
        horizontal: bool,
        (fixed, lo, hi): (i64, i64, i64),
    ) {
        if self.reach > 0 {
            self.widen_run(&cover.area, left, right, horizontal, (fixed, lo, hi));
        } else if horizontal {
            cover.set_span(fixed, lo, hi);
        } else {
            for py in lo..=hi {
                cover.set_span(py, fixed, fixed);
            }
        }
    }

    /// Widens, on each row of `area` they reach, `left[row]..=right[row]` (rows relative to
    /// `area.y0`) to the discs of a run of spine points: `(fixed, lo, hi)` is the row `fixed`
    /// from `x = lo` to `hi` when `horizontal`, else the column `fixed` from `y = lo` to `hi`.
    ///
    /// On a row `dy` away from a horizontal run, the union of its discs' spans is the single
    /// span `[lo - half[dy], hi + half[dy]]`. Beside a vertical run, every disc's span on a row
    /// is centred on the same column, so the union is the widest, the one of the nearest point.
    ///
    /// Widening instead of setting is exact because the caller widens only with the runs of
    /// one segment: its points are consecutive spine points (each within one step of the
    /// previous on both axes) and monotone in y, so those within reach of a row are
    /// consecutive too; each of their spans on that row contains its own centre, and
    /// consecutive centres are at most one column apart, so the spans chain into one interval,
    /// which is then their min..=max.
    #[inline(always)]
    fn widen_run(
        &self,
        area: &Bounds,
        left: &mut [i64],
        right: &mut [i64],
        horizontal: bool,
        (fixed, lo, hi): (i64, i64, i64),
    ) {
        let r = self.reach;
        if horizontal {
            widen_rows(
                area,
                left,
                right,
                fixed - r,
                (lo, hi),
                self.profile.iter().copied(),
            );
        } else {
            let at = (fixed, fixed);
            let (above, below) = (&self.profile[..r as usize], &self.profile[r as usize + 1..]);
            widen_rows(area, left, right, lo - r, at, above.iter().copied());
            let beside = std::iter::repeat_n(r, (hi - lo + 1) as usize);
            widen_rows(area, left, right, lo, at, beside);
            widen_rows(area, left, right, hi + 1, at, below.iter().copied());
        }
    }
}

/// Widens `left[row]..=right[row]` (rows relative to `area.y0`) to `lo - h..=hi + h` on the
/// rows `top, top + 1, ...` of `area`, one `h` of `half` per row, as many rows as `half` has.
#[inline(always)]
fn widen_rows(
    area: &Bounds,
    left: &mut [i64],
    right: &mut [i64],
    top: i64,
    (lo, hi): (i64, i64),
    half: impl ExactSizeIterator<Item = i64>,
) {
    let first = top.max(area.y0);
    let last = (top + half.len() as i64 - 1).min(area.y1);
    if first > last {
        return;
    }
    let rows = (first - area.y0) as usize..=(last - area.y0) as usize;
    for ((l, r), h) in left[rows.clone()]
        .iter_mut()
        .zip(&mut right[rows])
        .zip(half.skip((first - top) as usize))
    {
        *l = (*l).min(lo - h);
        *r = (*r).max(hi + h);
    }
}

/// Sets in `cover` every pixel within the disc of some spine point of `features`.
///
/// For a pixel `(x, y)` and a column `i`, the nearest spine point of that column is the one
/// with the smallest `|y - cy|`, call it `g(i, y)`; so the pixel is covered exactly when some
/// column has `|x - i| <= half[g(i, y)]`. Phase one computes `g` (capped at `reach + 1`, which
/// is already out of reach, so it fits a byte) one band of rows at a time with a downward and
/// an upward scan; phase two turns each row of `g` into the union of one span per column with
/// a sweep. Both are linear in the box: this is the exact squared Euclidean distance
/// transform of Meijster et al., specialised to the one threshold that matters.
fn distance_cover(features: &Bitmap, disc: &Disc, cover: &mut Bitmap) {
    const BAND: i64 = 256;
    let cap = (disc.reach + 1) as u8;
    let (f, a) = (features.area, cover.area);
    let columns = f.width() as usize;
    // span_end[x - a.x0]: the rightmost x' covered by a span starting at x (clamped to the box).
    let mut span_end = vec![i64::MIN; a.width() as usize];
    let mut g = vec![cap; BAND as usize * columns];
    let mut scan = vec![cap; columns];
    let mut band_top = a.y0;
    while band_top <= a.y1 {
        let band_bottom = (band_top + BAND - 1).min(a.y1);
        // Rows the downward scan never reaches (no spine point at or above them) stay capped.
        g.fill(cap);
        // Downward: distance to the nearest spine point at or above each row.
        scan.fill(cap);
        for y in (band_top - disc.reach).max(f.y0)..=band_bottom {
            features.row_distances(y, &mut scan, cap);
            if y >= band_top {
                let off = ((y - band_top) as usize) * columns;
                g[off..off + columns].copy_from_slice(&scan);
            }
        }
        // Upward: distance to the nearest spine point at or below; keep the smaller.
        scan.fill(cap);
        let mut y = (band_bottom + disc.reach).min(f.y1);
        while y >= band_top {
            features.row_distances(y, &mut scan, cap);
            if y <= band_bottom {
                let off = ((y - band_top) as usize) * columns;
                for (gv, &s) in g[off..off + columns].iter_mut().zip(&scan) {
                    *gv = (*gv).min(s);
                }
            }
            y -= 1;
        }
        for y in band_top..=band_bottom {
            let off = ((y - band_top) as usize) * columns;
            let mut any = false;
            for (i, &gv) in g[off..off + columns].iter().enumerate() {
                if gv >= cap {
                    continue;
                }
                let cx = f.x0 + i as i64;
                let hx = disc.half[usize::from(gv)];
                let (lo, hi) = ((cx - hx).max(a.x0), (cx + hx).min(a.x1));
                if lo <= hi {
                    let e = &mut span_end[(lo - a.x0) as usize];
                    *e = (*e).max(hi);
                    any = true;
                }
            }
            if !any {
                continue;
            }
            let mut run_end = i64::MIN;
            let mut run_start = 0;
            for (off, e) in span_end.iter_mut().enumerate() {
                let x = a.x0 + off as i64;
                if *e != i64::MIN {
                    if run_end < x {
                        run_start = x;
                    }
                    run_end = run_end.max(*e);
                    *e = i64::MIN;
                }
                if run_end == x {
                    cover.set_span(y, run_start, run_end);
                }
            }
        }
        band_top = band_bottom + 1;
    }
}

/// One bit per pixel of a box, rows of whole `u64` words.
struct Bitmap {
    /// The box the bits stand for; bit `x - area.x0` of row `y - area.y0`.
    area: Bounds,
    /// Words per row, so a row can be handed out as a slice.
    words: usize,
    /// At least `words * rows` words, row-major, low bit first (only the first
    /// `words * rows` are the box's; the rest are zero, left over from a bigger box).
    bits: Vec<u64>,
    /// Per row, the first and last word [`Bitmap::set_span`] wrote ([`UNTOUCHED`] if none),
    /// so blending a thin stroke's box skips its empty words and clears only what it used.
    touched: Vec<(usize, usize)>,
}

/// A row of a [`Bitmap`] no span has touched: first > last.
const UNTOUCHED: (usize, usize) = (usize::MAX, 0);

impl Bitmap {
    fn new(area: &Bounds) -> Self {
        Self::reuse(area, Vec::new(), Vec::new())
    }

    /// A bitmap over `area` in the buffers of an earlier one: `bits` must be all zero (it is
    /// only grown, so a small box costs nothing however big the earlier ones were).
    fn reuse(area: &Bounds, mut bits: Vec<u64>, mut touched: Vec<(usize, usize)>) -> Self {
        let words = (area.width() as usize).div_ceil(64);
        let rows = area.height() as usize;
        if bits.len() < words * rows {
            bits.resize(words * rows, 0);
        }
        touched.clear();
        touched.resize(rows, UNTOUCHED);
        Self {
            area: *area,
            words,
            bits,
            touched,
        }
    }

    #[inline]
    fn set(&mut self, x: i64, y: i64) {
        let (x, y) = ((x - self.area.x0) as usize, (y - self.area.y0) as usize);
        self.bits[y * self.words + x / 64] |= 1 << (x % 64);
        let t = &mut self.touched[y];
        *t = (t.0.min(x / 64), t.1.max(x / 64));
    }

    /// Sets `lo..=hi` (inside the box) of row `y`, whole words at a time.
    #[inline(always)]
    fn set_span(&mut self, y: i64, lo: i64, hi: i64) {
        let y = (y - self.area.y0) as usize;
        let row = y * self.words;
        let (lo, hi) = ((lo - self.area.x0) as usize, (hi - self.area.x0) as usize);
        set_bits(&mut self.bits[row..row + self.words], lo, hi);
        let t = &mut self.touched[y];
        *t = (t.0.min(lo / 64), t.1.max(hi / 64));
    }

    /// One step of the vertical distance scan: `dist[i]` becomes 0 where row `y` has a bit
    /// in column `i`, else one more (saturating at `cap`).
    fn row_distances(&self, y: i64, dist: &mut [u8], cap: u8) {
        if y < self.area.y0 || y > self.area.y1 {
            for d in dist.iter_mut() {
                *d = (*d + 1).min(cap);
            }
            return;
        }
        let row = (y - self.area.y0) as usize * self.words;
        for (chunk, &word) in dist.chunks_mut(64).zip(&self.bits[row..row + self.words]) {
            if word == 0 {
                for d in chunk.iter_mut() {
                    *d = (*d + 1).min(cap);
                }
            } else {
                for (b, d) in chunk.iter_mut().enumerate() {
                    *d = if (word >> b) & 1 == 1 {
                        0
                    } else {
                        (*d + 1).min(cap)
                    };
                }
            }
        }
    }
}

/// Sets bits `lo..=hi` of a row bitmap, whole words at a time.
#[inline]
fn set_bits(row: &mut [u64], lo: usize, hi: usize) {
    let (lw, hw) = (lo / 64, hi / 64);
    let lmask = !0u64 << (lo % 64);
    let hmask = !0u64 >> (63 - hi % 64);
    if lw == hw {
        row[lw] |= lmask & hmask;
    } else {
        row[lw] |= lmask;
        row[lw + 1..hw].fill(!0);
        row[hw] |= hmask;
    }
}

/// An inclusive box of integer coordinates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Leftmost column inside.
    pub x0: i64,
    /// Top row inside.
    pub y0: i64,
    /// Rightmost column inside (empty when below `x0`).
    pub x1: i64,
    /// Bottom row inside (empty when below `y0`).
    pub y1: i64,
}

impl Bounds {
    /// Whether `(x, y)` lies inside, edges included.
    pub fn contains(&self, x: i64, y: i64) -> bool {
        x >= self.x0 && x <= self.x1 && y >= self.y0 && y <= self.y1
    }

    fn is_empty(&self) -> bool {
        self.x0 > self.x1 || self.y0 > self.y1
    }

    fn width(&self) -> u64 {
        (self.x1 - self.x0 + 1) as u64
    }

    fn height(&self) -> u64 {
        (self.y1 - self.y0 + 1) as u64
    }

    fn area(&self) -> u64 {
        self.width() * self.height()
    }

    fn union(&self, other: &Bounds) -> Bounds {
        Bounds {
            x0: self.x0.min(other.x0),
            y0: self.y0.min(other.y0),
            x1: self.x1.max(other.x1),
            y1: self.y1.max(other.y1),
        }
    }
}

/// The points of `line(a, b)` (PROTOCOL.md §4) that lie inside a box, in plotting order,
/// found without walking the ones outside it.
///
/// The loop of §4 plots, for a line whose major axis is x (`|dx| >= |dy|`), exactly the points
/// `(x0 + sx*i, y0 + sy*floor((2*|dy|*i + |dx|) / (2*|dx|)))` for `i` in `0..=|dx|`, and
/// symmetrically when y is the major axis. Both coordinates are monotonic in `i`, so the
/// points inside a box are one interval of `i`, found in closed form; the walk then steps the
/// quotient and remainder of that division, never multiplying large numbers.
#[derive(Clone, Debug)]
pub struct ClippedLine {
    /// Major coordinate of the next point.
    m: i64,
    /// Minor coordinate of the next point.
    k: i64,
    /// Step of the major coordinate per point (±1).
    sm: i64,
    /// Step of the minor coordinate when the remainder wraps (±1).
    sk: i64,
    /// `(2*d*i + n) mod 2n` for the next point `i`: when it wraps, the minor coordinate steps.
    rem: i64,
    /// `2n`, the divisor of the closed form.
    two_n: i64,
    /// `2d`, added to the remainder per point.
    two_d: i64,
    /// Points still to produce.
    len: u64,
    /// Whether x is the major axis (decides how `(m, k)` maps to `(x, y)`).
    x_major: bool,
    /// The first and last points inside the box: their box is the box of all of them.
    first: (i64, i64),
    last: (i64, i64),
}

impl ClippedLine {
    /// `None` when no point of `line(a, b)` is inside `bounds`.
    pub fn new(a: Point, b: Point, bounds: &Bounds) -> Option<Self> {
        let (x0, y0, x1, y1) = (
            i64::from(a.x),
            i64::from(a.y),
            i64::from(b.x),
            i64::from(b.y),
        );
        let sx = if x0 < x1 { 1 } else { -1 };
        let sy = if y0 < y1 { 1 } else { -1 };
        let (dx, dy) = ((x1 - x0).abs(), (y1 - y0).abs());
        let x_major = dx >= dy;
        let (m0, k0, sm, sk, n, d) = if x_major {
            (x0, y0, sx, sy, dx, dy)
        } else {
            (y0, x0, sy, sx, dy, dx)
        };
        let (mlo, mhi, klo, khi) = if x_major {
            (bounds.x0, bounds.x1, bounds.y0, bounds.y1)
        } else {
            (bounds.y0, bounds.y1, bounds.x0, bounds.x1)
        };
        // Major axis: m0 + sm*i within [mlo, mhi].
        let (mut ilo, mut ihi) = if sm > 0 {
            (mlo - m0, mhi - m0)
        } else {
            (m0 - mhi, m0 - mlo)
        };
        ilo = ilo.max(0);
        ihi = ihi.min(n);
        // Minor axis: q(i) = floor((2*d*i + n) / (2*n)) within [qlo, qhi].
        let (qlo, qhi) = if sk > 0 {
            (klo - k0, khi - k0)
        } else {
            (k0 - khi, k0 - klo)
        };
        if d == 0 || n == 0 {
            if qlo > 0 || qhi < 0 {
                return None;
            }
        } else {
            // q(i) >= qlo  <=>  2*d*i >= 2*n*qlo - n;  q(i) <= qhi  <=>  2*d*i <= 2*n*(qhi+1) - n - 1.
            let (n1, d1) = (i128::from(n), i128::from(d));
            let lo = div_ceil(2 * n1 * i128::from(qlo) - n1, 2 * d1);
            let hi = div_floor(2 * n1 * (i128::from(qhi) + 1) - n1 - 1, 2 * d1);
            ilo = ilo.max(lo.clamp(0, i128::from(n) + 1) as i64);
            ihi = ihi.min(hi.clamp(-1, i128::from(n)) as i64);
        }
        if ilo > ihi {
            return None;
        }
        let at = |i: i64| -> (i64, i64, i64) {
            // n == 0 only for a single point, where i == 0.
            let two_n = (2 * i128::from(n)).max(1);
            let num = 2 * i128::from(d) * i128::from(i) + i128::from(n);
            let q = div_floor(num, two_n);
            let r = num - q * two_n;
            let (q, r) = (q as i64, r as i64);
            (m0 + sm * i, k0 + sk * q, r)
        };
        let (m, k, rem) = at(ilo);
        let (lm, lk, _) = at(ihi);
        let xy = |m: i64, k: i64| if x_major { (m, k) } else { (k, m) };
        Some(Self {
            m,
            k,
            sm,
            sk,
            rem,
            two_n: (2 * n).max(1),
            two_d: 2 * d,
            len: (ihi - ilo + 1) as u64,
            x_major,
            first: xy(m, k),
            last: xy(lm, lk),
        })
    }

    /// How many runs of points share their minor coordinate: one more than the minor
    /// coordinate's extent.
    fn runs(&self) -> u64 {
        let b = self.bounds();
        1 + if self.x_major {
            b.y1 - b.y0
        } else {
            b.x1 - b.x0
        } as u64
    }

    /// The box of the points still to come (before iteration starts: of all of them).
    pub fn bounds(&self) -> Bounds {
        Bounds {
            x0: self.first.0.min(self.last.0),
            y0: self.first.1.min(self.last.1),
            x1: self.first.0.max(self.last.0),
            y1: self.first.1.max(self.last.1),
        }
    }
}

fn div_ceil(a: i128, b: i128) -> i128 {
    -div_floor(-a, b)
}

/// `floor(a / b)` for `b > 0`, in `i64` when both fit (always, for points near a picture):
/// an `i128` division is a library call several times slower, and a stroke clips every
/// segment.
fn div_floor(a: i128, b: i128) -> i128 {
    match (i64::try_from(a), i64::try_from(b)) {
        (Ok(a), Ok(b)) => i128::from(a.div_euclid(b)),
        _ => a.div_euclid(b),
    }
}

impl Iterator for ClippedLine {
    type Item = (i64, i64);

    #[inline]
    fn next(&mut self) -> Option<(i64, i64)> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        let out = if self.x_major {
            (self.m, self.k)
        } else {
            (self.k, self.m)
        };
        self.m += self.sm;
        self.rem += self.two_d;
        if self.rem >= self.two_n {
            self.rem -= self.two_n;
            self.k += self.sk;
        }
        Some(out)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::try_from(self.len).unwrap_or(usize::MAX);
        (n, Some(n))
    }
}

/// Blends one colour onto many pixels, with the per-colour arithmetic done once.
///
/// §4's alpha `a + (A*(255-a) + 127) / 255` equals `(255*a + A*(255-a) + 127) / 255`, so all
/// four channels take the form `(pre + d*(255-a)) / 255` with `pre <= 65152`: it fits `u16`,
/// and the division is `(x + (x >> 8) + 1) >> 8`, exact for every `x` that can occur (checked
/// exhaustively by `division_by_255_is_exact`). Sixteen bytes at a time, the compiler turns
/// that into vector instructions.
struct Blender {
    /// The colour, copied as is when opaque.
    src: Rgba,
    /// `s*a + 127` per colour channel and `255*a + 127` for alpha, repeated for 4 pixels.
    pre: [u16; 16],
    /// The first 4 of `pre` as the 16-bit lanes of one `u64`, for the pixels after the last
    /// whole 16 bytes (most runs of a thin stroke are 1 to 3 pixels).
    pre_lanes: u64,
    /// `255 - a`, the destination's weight.
    ia: u16,
}

/// The low byte of each 16-bit lane of a `u64`.
const LANE_LOW_BYTES: u64 = 0x00ff_00ff_00ff_00ff;

/// `x / 255` for `x <= 65152` (the largest numerator of [`blend`]).
#[inline(always)]
fn div255(x: u16) -> u16 {
    (x + (x >> 8) + 1) >> 8
}

impl Blender {
    fn new(src: Rgba) -> Self {
        let a = u16::from(src[3]);
        let one = [
            u16::from(src[0]) * a + 127,
            u16::from(src[1]) * a + 127,
            u16::from(src[2]) * a + 127,
            255 * a + 127,
        ];
        let mut pre = [0; 16];
        for (i, p) in pre.iter_mut().enumerate() {
            *p = one[i % 4];
        }
        Self {
            src,
            pre,
            pre_lanes: one
                .iter()
                .rev()
                .fold(0, |lanes, &p| lanes << 16 | u64::from(p)),
            ia: 255 - a,
        }
    }

    /// One pixel of [`Blender::run`], its 4 channels in the 16-bit lanes of a `u64`: every
    /// intermediate value fits 16 bits (see [`div255`]), so no lane carries into the next.
    #[inline(always)]
    fn pixel(&self, px: &mut [u8; 4]) {
        let d = u64::from(u32::from_le_bytes(*px));
        let d = (d & 0xff) | (d & 0xff00) << 8 | (d & 0xff_0000) << 16 | (d & 0xff00_0000) << 24;
        let x = self.pre_lanes + d * u64::from(self.ia);
        let q = ((x + ((x >> 8) & LANE_LOW_BYTES) + 0x0001_0001_0001_0001) >> 8) & LANE_LOW_BYTES;
        let q = q | q >> 8;
        let q = (q & 0xffff) | (q >> 16) & 0xffff_0000;
        *px = (q as u32).to_le_bytes();
    }

    /// Blends onto every pixel of `dst` (whole RGBA8 pixels).
    #[inline]
    fn run(&self, dst: &mut [u8]) {
        match self.src[3] {
            255 => {
                for px in dst.chunks_exact_mut(4) {
                    px.copy_from_slice(&self.src);
                }
            }
            0 => {}
            _ => self.translucent(dst),
        }
    }

    /// [`Blender::run`] on each of `runs` of `pixels`, deciding on the alpha once rather
    /// than per run (a thin stroke's runs are a few pixels each).
    fn runs(&self, pixels: &mut [u8], runs: &[Run]) {
        match self.src[3] {
            255 => {
                for run in runs {
                    for px in pixels[run.start..run.end].chunks_exact_mut(4) {
                        px.copy_from_slice(&self.src);
                    }
                }
            }
            0 => {}
            _ => {
                for run in runs {
                    self.translucent(&mut pixels[run.start..run.end]);
                }
            }
        }
    }

    #[inline(always)]
    fn translucent(&self, dst: &mut [u8]) {
        let ia = self.ia;
        let mut blocks = dst.chunks_exact_mut(16);
        for block in &mut blocks {
            for (d, &p) in block.iter_mut().zip(&self.pre) {
                *d = div255(p + u16::from(*d) * ia) as u8;
            }
        }
        for px in blocks.into_remainder().as_chunks_mut::<4>().0 {
            self.pixel(px);
        }
    }
}

/// Blends `src` onto the 4 bytes of `dst` (PROTOCOL.md §4).
#[inline]
pub fn blend(dst: &mut [u8], src: Rgba) {
    let a = u32::from(src[3]);
    if a == 255 {
        dst.copy_from_slice(&src);
    } else if a != 0 {
        let ia = 255 - a;
        for c in 0..3 {
            dst[c] = ((u32::from(src[c]) * a + u32::from(dst[c]) * ia + 127) / 255) as u8;
        }
        dst[3] = (a + (u32::from(dst[3]) * ia + 127) / 255) as u8;
    }
}

/// The §4 `line` loop, literally. The reference for tests; [`Raster`] never walks it.
pub fn line_reference(a: Point, b: Point) -> Vec<Point> {
    let (mut x0, mut y0, x1, y1) = (
        i64::from(a.x),
        i64::from(a.y),
        i64::from(b.x),
        i64::from(b.y),
    );
    let dx = (x1 - x0).abs();
    let sx = if x0 < x1 { 1 } else { -1 };
    let dy = -(y1 - y0).abs();
    let sy = if y0 < y1 { 1 } else { -1 };
    let mut err = dx + dy;
    let mut out = Vec::new();
    loop {
        out.push(Point::new(x0 as i32, y0 as i32));
        if x0 == x1 && y0 == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x0 += sx;
        }
        if e2 <= dx {
            err += dx;
            y0 += sy;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disc_spans_are_the_widest_inside_the_circle() {
        let widths = (0..=1024).chain([4097, 32_768, 65_534, 65_535]);
        for width in widths {
            let disc = Disc::new(width);
            let r2 = i64::from(width) * i64::from(width);
            assert_eq!(disc.reach, i64::from(width / 2));
            assert_eq!(disc.half.len() as i64, disc.reach + 1);
            for (dy, &dx) in (0..).zip(&disc.half) {
                // Inside (PROTOCOL.md §4), and the next one out is not.
                assert!(
                    dx >= 0 && 4 * (dx * dx + dy * dy) <= r2,
                    "width {width} row {dy}"
                );
                assert!(
                    4 * ((dx + 1) * (dx + 1) + dy * dy) > r2,
                    "width {width} row {dy}"
                );
            }
            assert_eq!(disc.profile.len() as i64, 2 * disc.reach + 1);
        }
    }

    #[test]
    fn division_by_255_is_exact() {
        for x in 0..=65152u16 {
            assert_eq!(div255(x), x / 255, "{x}");
        }
    }

    #[test]
    fn blender_equals_blend() {
        for a in 0..=255u8 {
            for d in [
                [0, 0, 0, 0],
                [255, 255, 255, 255],
                [1, 128, 254, 77],
                [200, 3, 99, 255],
            ] {
                let src = [255, 0, 131, a];
                let mut want = d;
                blend(&mut want, src);
                // Whole 16-byte blocks, the per-pixel remainder, and both.
                for n in 1..=9 {
                    let mut run = d.repeat(n);
                    Blender::new(src).run(&mut run);
                    assert_eq!(run, want.repeat(n), "a={a} d={d:?} n={n}");
                }
            }
        }
    }
}
