//! The one rasterizer: what an op does to pixels (PROTOCOL.md §4). Every party that keeps a
//! picture (the picture service, the Rust client, tests) uses this code, and the browser
//! client's JavaScript port is checked against the same vectors.
//!
//! Work per op is bounded by the picture, never by the coordinates an op carries: shapes are
//! clipped before they are walked, so a stroke between far-away points costs no more than one
//! that crosses the picture.

use crate::wire::{Op, Point, Rgba};

/// A `width × height` RGBA8 picture, row-major.
#[derive(Clone, PartialEq, Eq)]
pub struct Raster {
    width: u32,
    height: u32,
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

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    /// Row-major RGBA8 bytes.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

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
        match op {
            Op::Pixels { color, points } => self.pixels_op(*color, points),
            Op::Rect { x, y, w, h, color } => self.rect(*x, *y, *w, *h, *color),
            Op::Stroke {
                color,
                width,
                points,
            } => self.stroke(*color, *width, points),
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
        (x0 < x1 && y0 < y1).then(|| (x0 as u32, y0 as u32, x1 as u32, y1 as u32))
    }

    fn rect(&mut self, x: i32, y: i32, w: u32, h: u32, color: Rgba) -> u64 {
        let Some((x0, y0, x1, y1)) = self.clip(x, y, w, h) else {
            return 0;
        };
        for py in y0..y1 {
            let start = self.index(x0, py);
            let end = self.index(x1, py);
            for px in self.pixels[start..end].chunks_exact_mut(4) {
                blend(px, color);
            }
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
            for px in x0..x1 {
                let i = (i64::from(px) - i64::from(x)) as usize;
                let s = (j * w as usize + i) * 4;
                let src = [rgba[s], rgba[s + 1], rgba[s + 2], rgba[s + 3]];
                let d = self.index(px, py);
                blend(&mut self.pixels[d..d + 4], src);
            }
        }
        u64::from(x1 - x0) * u64::from(y1 - y0)
    }

    fn stroke(&mut self, color: Rgba, width: u16, points: &[Point]) -> u64 {
        if points.is_empty() || self.width == 0 || self.height == 0 {
            return 0;
        }
        let r2 = i64::from(width) * i64::from(width);
        // Largest |d| along one axis that a spine point can reach: 4*d^2 <= r2.
        let reach = i64::from(width / 2);
        // half[dy]: the widest |dx| covered on the row |dy| away from a spine point.
        let half: Vec<i64> = (0..=reach)
            .map(|dy| {
                let mut dx = reach;
                while dx >= 0 && 4 * (dx * dx + dy * dy) > r2 {
                    dx -= 1;
                }
                dx
            })
            .collect();
        let (w, h) = (i64::from(self.width), i64::from(self.height));
        let words = (self.width as usize).div_ceil(64);
        let mut covered = vec![0u64; words * self.height as usize];
        let clip = Clip {
            x0: -reach,
            y0: -reach,
            x1: w - 1 + reach,
            y1: h - 1 + reach,
        };
        let mut stamp = |cx: i64, cy: i64| {
            for (dy, &hx) in half.iter().enumerate() {
                if hx < 0 {
                    continue;
                }
                let dy = dy as i64;
                for py in [cy - dy, cy + dy] {
                    if py < 0 || py >= h {
                        continue;
                    }
                    let (lo, hi) = ((cx - hx).max(0), (cx + hx).min(w - 1));
                    if lo <= hi {
                        set_bits(&mut covered[py as usize * words..][..words], lo, hi);
                    }
                    if dy == 0 {
                        break;
                    }
                }
            }
        };
        if points.len() == 1 {
            let p = points[0];
            if clip.contains(i64::from(p.x), i64::from(p.y)) {
                stamp(i64::from(p.x), i64::from(p.y));
            }
        }
        for pair in points.windows(2) {
            line_clipped(pair[0], pair[1], &clip, &mut stamp);
        }
        let mut count = 0;
        for py in 0..self.height as usize {
            for (wi, &bits) in covered[py * words..][..words].iter().enumerate() {
                let mut bits = bits;
                while bits != 0 {
                    let px = wi * 64 + bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    let d = (py * self.width as usize + px) * 4;
                    blend(&mut self.pixels[d..d + 4], color);
                    count += 1;
                }
            }
        }
        count
    }
}

/// Sets bits `lo..=hi` of a row bitmap.
fn set_bits(row: &mut [u64], lo: i64, hi: i64) {
    for x in lo..=hi {
        row[x as usize / 64] |= 1 << (x as usize % 64);
    }
}

/// An inclusive box of spine points that can matter.
struct Clip {
    x0: i64,
    y0: i64,
    x1: i64,
    y1: i64,
}

impl Clip {
    fn contains(&self, x: i64, y: i64) -> bool {
        x >= self.x0 && x <= self.x1 && y >= self.y0 && y <= self.y1
    }
}

/// Plots the points of `line(a, b)` (PROTOCOL.md §4) that lie inside `clip`, without walking
/// the ones outside it.
///
/// The loop of §4 plots, for a line whose major axis is x (`|dx| >= |dy|`), exactly the points
/// `(x0 + sx*i, y0 + sy*floor((2*|dy|*i + |dx|) / (2*|dx|)))` for `i` in `0..=|dx|`, and
/// symmetrically when y is the major axis; so the walk can start at the first `i` whose major
/// coordinate is inside `clip`.
fn line_clipped(a: Point, b: Point, clip: &Clip, plot: &mut impl FnMut(i64, i64)) {
    let (x0, y0, x1, y1) = (
        i64::from(a.x),
        i64::from(a.y),
        i64::from(b.x),
        i64::from(b.y),
    );
    let sx = if x0 < x1 { 1 } else { -1 };
    let sy = if y0 < y1 { 1 } else { -1 };
    let (dx, dy) = ((x1 - x0).abs(), (y1 - y0).abs());
    if dx == 0 && dy == 0 {
        if clip.contains(x0, y0) {
            plot(x0, y0);
        }
        return;
    }
    // Major axis m (length n), minor axis k (length d): k(i) = floor((2*d*i + n) / (2*n)).
    let x_major = dx >= dy;
    let (m0, k0, sm, sk, n, d, mlo, mhi) = if x_major {
        (x0, y0, sx, sy, dx, dy, clip.x0, clip.x1)
    } else {
        (y0, x0, sy, sx, dy, dx, clip.y0, clip.y1)
    };
    // i such that m0 + sm*i lies within [mlo, mhi].
    let (ilo, ihi) = if sm > 0 {
        (mlo - m0, mhi - m0)
    } else {
        (m0 - mhi, m0 - mlo)
    };
    let (ilo, ihi) = (ilo.max(0), ihi.min(n));
    for i in ilo..=ihi {
        let m = m0 + sm * i;
        let k = k0 + sk * ((2 * d * i + n) / (2 * n));
        let (x, y) = if x_major { (m, k) } else { (k, m) };
        if clip.contains(x, y) {
            plot(x, y);
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
    fn closed_form_line_matches_reference() {
        let wide = Clip {
            x0: i64::MIN / 4,
            y0: i64::MIN / 4,
            x1: i64::MAX / 4,
            y1: i64::MAX / 4,
        };
        for ax in -6..=6 {
            for ay in -6..=6 {
                for (bx, by) in [(0, 0), (5, 2), (-3, 7), (2, -5), (-7, -7), (6, 6), (1, 0)] {
                    let (a, b) = (Point::new(ax, ay), Point::new(bx, by));
                    let mut got = Vec::new();
                    line_clipped(a, b, &wide, &mut |x, y| got.push(Point::new(x as i32, y as i32)));
                    assert_eq!(got, line_reference(a, b), "line {a:?} -> {b:?}");
                }
            }
        }
    }

    #[test]
    fn half_alpha_blend() {
        let mut px = [255, 255, 255, 255];
        blend(&mut px, [0, 0, 0, 128]);
        // (0*128 + 255*127 + 127) / 255 = 127; alpha: 128 + (255*127 + 127)/255 = 255
        assert_eq!(px, [127, 127, 127, 255]);
    }
}
